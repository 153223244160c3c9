rule train_classifier:
    input:
        unpack(classifier_inputs),
    output:
        model=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/model.skops",
        predictions=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/predictions.csv",
        metrics=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/metrics.json",
        roc=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/roc.csv",
        roc_plot=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/roc.png",
        confusion_plot=f"{R}/classify/{{target}}/{{init}}/{{features}}/{{clf}}/confusion.png",
    log:
        f"{R}/logs/train_classifier/{{target}}/{{init}}/{{features}}/{{clf}}.log",
    benchmark:
        f"{R}/benchmarks/train_classifier/{{target}}/{{init}}/{{features}}/{{clf}}.tsv"
    conda:
        "../../envs/sklearn.yaml"
    threads: 1
    params:
        hyperparameters=lambda wildcards: config["classifiers"][wildcards.clf],
        seed=config["seed"],
    script:
        "../scripts/train_classifier.py"
