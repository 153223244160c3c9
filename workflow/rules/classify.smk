rule train_classifier:
    input:
        features=features_input,
    output:
        model=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/model.skops",
        predictions=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/predictions.csv",
        metrics=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/metrics.json",
    log:
        f"{R}/logs/train_classifier/{{target}}/{{init}}/{{features}}/{{clf}}.log",
    conda:
        "../../envs/sklearn.yaml"
    threads: 1
    params:
        hyperparameters=lambda wildcards: config["classifiers"][wildcards.clf],
        seed=config["seed"],
    script:
        "../scripts/train_classifier.py"
