# One command each: `make demo` sets up and runs the workflow on generated demo data; `make test` sets up and
# runs every check CI runs. PYTHON may point at any Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The SLURM executor plugin (pyproject extra `slurm`) in a venv of its own, layered on $(VENV) by a .pth file:
# the tests' local snakemake calls stay free of the plugin's start-up probes (README, "GPUs and clusters").
SLURM_VENV ?= .venv-slurm
SLURM_STAMP := $(SLURM_VENV)/installed.stamp

.PHONY: setup demo test test-slurm lint system-deps clean
.PHONY: docs benchmark ablation

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[workflow,test,onnx]"
	touch $@

setup: $(BIN)/snakemake

$(SLURM_STAMP): pyproject.toml $(BIN)/snakemake
	$(PYTHON) -m venv $(SLURM_VENV)
	$(BIN)/python -c 'import sysconfig; print("import site; site.addsitedir(%r)" % sysconfig.get_path("purelib"))' \
	  > "$$($(SLURM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/medxfer-base.pth"
	$(SLURM_VENV)/bin/pip install -e ".[slurm]"
	touch $@

demo: setup
	$(BIN)/snakemake --cores 2

lint: setup
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint

# Debian packages the tests use for real: Chromium renders the HTML report (tests/test_report_html.py). The
# slurm-marked tests install and start SLURM themselves (tests/slurm/start-local-slurm.sh). Both need root.
system-deps:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The unit layer side by side on TEST_WORKERS processes (pytest-xdist), then the layer that shares the one tiny
# workflow run (workflow and slurm marks) in two lanes (tests/conftest.py): the local run's tests in order on one
# process, the SLURM tests on another. The slurm-marked tests bring up a real local SLURM (root, apt-get);
# `pytest -m "not slurm"` leaves them out.
TEST_WORKERS ?= 2
test: lint system-deps $(SLURM_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not workflow and not slurm"
	MEDXFER_SLURM_PYTHON=$(abspath $(SLURM_VENV))/bin/python \
	  $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope -m "workflow or slurm"

test-slurm: $(SLURM_STAMP)
	MEDXFER_SLURM_PYTHON=$(abspath $(SLURM_VENV))/bin/python $(BIN)/pytest -m slurm

# The three real-data benchmarks (../shared/data), one after the other, then docs/benchmarks.md and the README's
# headline table from their own records (report/run.json, report/benchmark.md). BENCHMARKS picks a subset.
BENCHMARKS ?= ct chest bone
CORES ?= 2
benchmark: setup
	for name in $(BENCHMARKS); do $(BIN)/snakemake --cores $(CORES) --configfile config/benchmark-$$name.yaml || exit 1; done
	$(BIN)/medxfer benchmark-docs $(foreach name,$(BENCHMARKS),results/benchmark-$(name))

# Ablation studies (config/ablation/): per study S, the cut-down base S.yaml over benchmark-B.yaml (B: S up to its
# first '_', so bone_10pct is a second study over the bone benchmark), then every
# S-<variant>.yaml over both, then docs/ablations.md from their own records (each row's change is read from the
# configs the runs recorded). Only the summary is built: heatmaps and robustness are not what an ablation compares,
# and at 128 px they cost more than the training.
ABLATION_STUDIES ?= chest bone bone_10pct grades
ablation_runs = results/ablation-$(1)/base $(patsubst config/ablation/$(1)-%.yaml,results/ablation-$(1)/%,$(wildcard config/ablation/$(1)-*.yaml))
ablation: setup
	for study in $(ABLATION_STUDIES); do \
	  base="--configfile config/benchmark-$${study%%_*}.yaml config/ablation/$$study.yaml"; \
	  $(BIN)/snakemake --cores $(CORES) $$base -- results/ablation-$$study/base/report/benchmark.csv || exit 1; \
	  for variant in config/ablation/$$study-*.yaml; do \
	    name=$$(basename $$variant .yaml); name=$${name#$$study-}; \
	    $(BIN)/snakemake --cores $(CORES) $$base $$variant -- results/ablation-$$study/$$name/report/benchmark.csv \
	      || exit 1; \
	  done; \
	done
	$(BIN)/medxfer ablation-docs $(foreach study,$(ABLATION_STUDIES),--study $(call ablation_runs,$(study)))

# docs/config.md is generated from workflow/schemas/config.schema.yaml; tests/test_configdoc.py fails when it is stale.
docs: setup
	$(BIN)/medxfer config-docs --output docs/config.md

clean:
	rm -rf results/* data/demo .snakemake
