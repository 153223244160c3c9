rule extract_features:
    input:
        unpack(target_inputs),
        weights=model_files("model.safetensors"),
        metas=model_files("model.json"),
    output:
        features=[at(paths.FEATURES, arch=arch) for arch in ARCHS],
        fused=at(paths.FUSED),
        report=at(paths.FUSION_REPORT),
        transform=at(paths.FUSION_TRANSFORM),
    log:
        f"{R}/logs/extract_features/{{target}}/{{init}}/seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/extract_features/{{target}}/{{init}}/seed{{seed}}.tsv"
    priority: chain_priority
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["extract_features"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        **job_params(jobs.extract_settings),
    script:
        "../scripts/run_stage.py"
