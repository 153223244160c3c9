rule summarize_results:
    input:
        finetune=finetune_metrics(),
        classify=classify_metrics(),
        # read beside each metrics.json: bootstrap intervals for the CNN rows, the paired comparison
        cnn_predictions=finetune_metrics("predictions.csv"),
        predictions=classify_metrics("predictions.csv"),
        overlap=source_overlap_checks(),
        manifests=[manifest_of(target) for target in FT["targets"]],
    output:
        summary=f"{R}/report/summary.csv",
        metrics=f"{R}/report/metrics.json",
        table=f"{R}/report/summary.md",
        headline=f"{R}/report/headline.csv",
        benchmark_md=f"{R}/report/benchmark.md",
        benchmark_csv=f"{R}/report/benchmark.csv",
        html=report(
            f"{R}/report/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "all models and classifiers"},
        ),
    log:
        f"{R}/logs/summarize_results.log",
    conda:
        "../../envs/sklearn.yaml"
    params:
        seed=config["seed"],
        report=config["report"],
        targets=FT["targets"],
    script:
        "../scripts/summarize_results.py"


rule summarize_faithfulness:
    input:
        faithfulness=explanations("faithfulness"),
    output:
        table=f"{R}/report/faithfulness.csv",
        means=f"{R}/report/faithfulness_summary.csv",
        plot=report(
            f"{R}/report/faithfulness.png",
            caption="../report/faithfulness.rst",
            category="Summary",
            labels={"table": "heatmap faithfulness"},
        ),
    log:
        f"{R}/logs/summarize_faithfulness.log",
    conda:
        "../../envs/sklearn.yaml"
    script:
        "../scripts/summarize_faithfulness.py"


rule plot_training_curves:
    input:
        logs=lambda wildcards: [
            at(
                paths.MODEL,
                "log.csv",
                target=wildcards.target,
                init=init,
                seed=FIRST_SEED[0],
                arch=arch,
            )
            for init in INITS
            for arch in ARCHS
        ],
    output:
        report(
            at(paths.TRAINING_CURVES),
            caption="../report/training.rst",
            category="Training curves",
            labels={"target": "{target}"},
        ),
    log:
        f"{R}/logs/plot_training_curves/{{target}}.log",
    conda:
        "../../envs/sklearn.yaml"
    script:
        "../scripts/plot_training_curves.py"
