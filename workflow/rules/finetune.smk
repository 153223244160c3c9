rule finetune_model:
    input:
        unpack(target_inputs),
        unpack(init_inputs),
    output:
        weights=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/model.safetensors",
        meta=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/model.json",
        log_csv=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/log.csv",
        metrics=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/metrics.json",
        predictions=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/predictions.csv",
    log:
        f"{R}/logs/finetune_model/{{target}}/{{init}}/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/finetune_model/{{target}}/{{init}}/{{arch}}.tsv"
    priority: CHAIN_FIRST
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["finetune_model"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=180,
    params:
        train=finetune_params,
        resume=resume_dir("finetune"),
        resume_root=RESUME_ROOT,
        init=base_init,
        seed=run_seed,
        decision=config["decision"]["threshold"],
        device=config["device"],
    script:
        "../scripts/finetune_model.py"
