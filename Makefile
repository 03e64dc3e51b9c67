# Two entry points for a fresh machine (only Python needed): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
RUN ?= runs/demo

# The demo: the whole protocol (baseA/B, BnB, BnB+, AnB, AnB+, RnB in both directions) on a random Fashion-MNIST
# split at cuts 1, 3, 5, 7, scaled to finish in minutes on two CPU cores, then the analysis and its report.
DEMO_OPTS ?= --dataset fashion-mnist --split random --seeds 0 --arch caffenet-small --arch-option width=0.25 \
	--cuts 1,3,5,7 --train-per-class 500 --epochs 3 --batch-size 64 --crop-padding 2 --schedule cosine \
	--lr 0.02 --warmup 0.2

# The reproduction report (docs/reproduction.md): the full protocol, every cut, three seeds, both Fashion-MNIST splits,
# on a LocalCluster of two dask workers. Resumable: rerun it after an interruption. CIFAR-10 is added the same way.
REPRO_FASHION_OPTS ?= --dataset fashion-mnist --split random --split clothing-accessories --seeds 0,1,2 \
	--arch caffenet-small --arch-option width=0.25 --train-per-class 500 --epochs 6 --batch-size 64 \
	--crop-padding 2 --schedule cosine --lr 0.02 --warmup 0.2
DASK ?= --executor dask --workers 2

.PHONY: setup demo test fashion-mnist reproduction clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

fashion-mnist:
	@if [ -f $(FASHION) ]; then exit 0; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is missing and apt-get is not available here. Either install Debian's"; \
		echo "dataset-fashion-mnist package, or put torchvision's FashionMNIST/raw files under a folder and run"; \
		echo "  make demo DEMO_OPTS='--dataset fashion-mnist --data-root FOLDER ...'"; \
		echo "(add --download to let torchvision fetch it there when the network allows)."; \
		exit 1; \
	fi

demo: $(STAMP) fashion-mnist
	$(BIN)/probe train $(RUN) $(DEMO_OPTS)
	$(BIN)/probe analyze $(RUN)

reproduction: $(STAMP) fashion-mnist
	$(BIN)/probe train runs/repro-fashion-mnist $(REPRO_FASHION_OPTS) $(DASK)
	$(BIN)/probe extract runs/repro-fashion-mnist --probe-set both --per-class 100 $(DASK)
	$(BIN)/python -m analysis.reproduction collect runs/repro-fashion-mnist fashion-mnist --title Fashion-MNIST \
		--command "probe train runs/repro-fashion-mnist $(REPRO_FASHION_OPTS) $(DASK)" \
		--command "probe extract runs/repro-fashion-mnist --probe-set both --per-class 100 $(DASK)" \
		--command "python -m analysis.reproduction collect runs/repro-fashion-mnist fashion-mnist --title Fashion-MNIST"
	$(BIN)/python -m analysis.reproduction render

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
