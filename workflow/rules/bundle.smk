rule export_bundle:
    input:
        unpack(bundle_inputs),
    output:
        bundle=directory(at(paths.BUNDLE)),
        record=at(paths.BUNDLE_RECORD),
    log:
        f"{R}/logs/export_bundle/{{target}}/{{init}}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        **job_params(jobs.bundle_params),
    script:
        "../scripts/run_stage.py"


rule predict:
    input:
        unpack(predict_inputs),
    output:
        folder=directory(at(paths.PREDICTIONS)),
    log:
        f"{R}/logs/predict/{{prediction}}.log",
    benchmark:
        f"{R}/benchmarks/predict/{{prediction}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["predict"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        bundle=lambda wildcards: jobs.predict_bundle(config, wildcards),
        source=lambda wildcards: config["predict"][wildcards.prediction]["input"],
        heatmaps=lambda wildcards: config["predict"][wildcards.prediction]["heatmaps"],
        device=config["device"],
        # content, not file times, decides whether the images changed (as for ingest)
        fingerprint=predict_fingerprint,
    script:
        "../scripts/run_stage.py"
