rule summarize_results:
    input:
        **jobs.summary_inputs(config),
    output:
        **{
            key: at(paths.REPORT, name)
            for key, name in jobs.SUMMARY_FILES.items()
            if key != "html"
        },
        html=report(
            at(paths.REPORT, jobs.SUMMARY_FILES["html"]),
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "all models and classifiers"},
        ),
    log:
        f"{R}/logs/summarize_results.log",
    conda:
        "../../envs/sklearn.yaml"
    params:
        **jobs.summary_params(config),
    script:
        "../scripts/run_stage.py"


rule summarize_faithfulness:
    input:
        faithfulness=explanations("faithfulness"),
    output:
        table=at(paths.REPORT, jobs.FAITHFULNESS_SUMMARY_FILES["table"]),
        means=at(paths.REPORT, jobs.FAITHFULNESS_SUMMARY_FILES["means"]),
        plot=report(
            at(paths.REPORT, jobs.FAITHFULNESS_SUMMARY_FILES["plot"]),
            caption="../report/faithfulness.rst",
            category="Summary",
            labels={"table": "heatmap faithfulness"},
        ),
    log:
        f"{R}/logs/summarize_faithfulness.log",
    conda:
        "../../envs/sklearn.yaml"
    script:
        "../scripts/run_stage.py"


rule plot_training_curves:
    input:
        logs=lambda wildcards: jobs.training_logs(config, wildcards),
    output:
        plot=report(
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
        "../scripts/run_stage.py"
