rule check_source_overlap:
    input:
        target=f"{R}/datasets/{{target}}/manifest.csv",
        sources=lambda wildcards: [manifest_of(s) for s in pretrain_sources()],
    output:
        f"{R}/datasets/{{target}}/source_overlap.json",
    log:
        f"{R}/logs/check_source_overlap/{{target}}.log",
    conda:
        "../../envs/data.yaml"
    params:
        sources=pretrain_sources(),
    script:
        "../scripts/check_source_overlap.py"
