rule finetune_model:
    input:
        unpack(target_inputs),
        unpack(init_inputs),
    output:
        weights=at(paths.MODEL, "model.safetensors"),
        meta=at(paths.MODEL, "model.json"),
        log_csv=at(paths.MODEL, "log.csv"),
        metrics=at(paths.MODEL, "metrics.json"),
        predictions=at(paths.MODEL, "predictions.csv"),
        reliability=report(
            at(paths.MODEL, "reliability.png"),
            caption="../report/reliability.rst",
            category="Calibration",
            subcategory="{target}",
            labels={"init": "{init}", "seed": "{seed}", "model": "{arch}"},
        ),
    log:
        f"{R}/logs/finetune_model/{{target}}/{{init}}/seed{{seed}}/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/finetune_model/{{target}}/{{init}}/seed{{seed}}/{{arch}}.tsv"
    priority: chain_priority
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["finetune_model"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=180,
    params:
        **job_params(jobs.finetune_settings),
    script:
        "../scripts/run_stage.py"
