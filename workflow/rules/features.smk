rule extract_features:
    input:
        unpack(target_inputs),
        weights=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/model.safetensors",
        meta=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/model.json",
    output:
        features=f"{R}/features/{{target}}/{{init}}/{{arch}}.npz",
    log:
        f"{R}/logs/extract_features/{{target}}/{{init}}/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/extract_features/{{target}}/{{init}}/{{arch}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["extract_features"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        batch_size=config["features"]["batch_size"],
        stages=config["features"]["stages"],
        device=config["device"],
    script:
        "../scripts/extract_features.py"


rule fuse_features:
    input:
        features=expand(
            f"{R}/features/{{{{target}}}}/{{{{init}}}}/{{arch}}.npz", arch=ARCHS
        ),
    output:
        features=f"{R}/fused/{{target}}/{{init}}/features.npz",
        report=f"{R}/fused/{{target}}/{{init}}/fusion.json",
    log:
        f"{R}/logs/fuse_features/{{target}}/{{init}}.log",
    conda:
        "../../envs/sklearn.yaml"
    params:
        fusion=config["fusion"],
        seed=run_seed,
    script:
        "../scripts/fuse_features.py"
