rule explain_model:
    input:
        unpack(target_inputs),
        weights=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/model.safetensors",
        meta=f"{R}/finetune/{{target}}/{{init}}/{{arch}}/model.json",
    output:
        folder=report(
            directory(f"{R}/explain/{{target}}/{{init}}/{{arch}}"),
            patterns=["{gallery,gallery}.png"],
            caption="../report/gallery.rst",
            category="Heatmaps",
            subcategory="{target}",
            labels={"init": "{init}", "model": "{arch}"},
        ),
        # outside the folder: the summary's input is then a file Snakemake checksums, not a folder's time
        faithfulness=f"{R}/faithfulness/{{target}}/{{init}}/{{arch}}.csv",
    log:
        f"{R}/logs/explain_model/{{target}}/{{init}}/{{arch}}.log",
    benchmark:
        f"{R}/benchmarks/explain_model/{{target}}/{{init}}/{{arch}}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["threads"]["explain_model"]
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        explain=config["explain"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/explain_model.py"
