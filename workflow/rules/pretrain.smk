rule pretrain_model:
    input:
        unpack(source_inputs),
    output:
        weights=at(paths.PRETRAINED, "model.safetensors"),
        meta=at(paths.PRETRAINED, "model.json"),
        log_csv=at(paths.PRETRAINED, "log.csv"),
    log:
        f"{R}/logs/pretrain_model/{{source}}/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/pretrain_model/{{source}}/{{arch}}.tsv"
    priority: PRETRAIN_FIRST
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["pretrain_model"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        **job_params(jobs.pretrain_settings),
    script:
        "../scripts/run_stage.py"
