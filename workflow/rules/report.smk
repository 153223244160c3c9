rule summarize_results:
    input:
        finetune=finetune_metrics(),
        classify=classify_metrics(),
    output:
        summary=f"{R}/report/summary.csv",
        metrics=f"{R}/report/metrics.json",
        table=f"{R}/report/summary.md",
    log:
        f"{R}/logs/summarize_results.log",
    conda:
        "../../envs/sklearn.yaml"
    script:
        "../scripts/summarize_results.py"
