rule summarize_results:
    input:
        finetune=finetune_metrics(),
        classify=classify_metrics(),
        # read beside each metrics.json: bootstrap intervals for the CNN rows, the paired comparison
        cnn_predictions=finetune_metrics("predictions.csv"),
        predictions=classify_metrics("predictions.csv"),
    output:
        summary=f"{R}/report/summary.csv",
        metrics=f"{R}/report/metrics.json",
        table=f"{R}/report/summary.md",
    log:
        f"{R}/logs/summarize_results.log",
    conda:
        "../../envs/sklearn.yaml"
    params:
        seed=config["seed"],
    script:
        "../scripts/summarize_results.py"
