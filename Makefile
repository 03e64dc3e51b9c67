# Two entry points for a fresh machine (only Python needed): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
RUN ?= runs/demo

# The demo: the whole protocol (baseA/B, BnB, BnB+, AnB, AnB+, RnB in both directions) on a random Fashion-MNIST
# split at cuts 1, 4, 7 and three seeds, the fewest that give an interval a claim can rest on, then the analysis and its
# report; sized to finish, setup included, within five minutes on two CPU cores. Three seeds of this size show the
# specialization of the upper layers (claims 4 and 5); the reproduction report has the rest. The sizes, measured with
# benchmarks/demo_profile.py (docs/benchmarks.md): caffenet-small at width 1/8 (less than half the CPU seconds per
# image of width 1/4), batches of 128; 300 images a class, a third held out for validation, so that the convergence
# check reads 3,000 validation images; 300 test images a class (the whole test set took a quarter of the time); 8
# epochs of a cosine schedule, over whose last epochs the bases' mean validation gain falls below 0.005. Two dask
# workers of one thread each (probe starts them without distributed's MALLOC_TRIM_THRESHOLD_=65536, under which the
# workers spent 39% of their time in the kernel: docs/benchmarks.md).
DEMO_OPTS ?= --dataset fashion-mnist --split random --seeds 0,1,2 --arch caffenet-small --arch-option width=0.125 \
	--cuts 1,4,7 --train-per-class 300 --val-fraction 0.3333 --test-per-class 300 --epochs 8 --batch-size 128 \
	--crop-padding 2 --schedule cosine --lr 0.04 --warmup 0.2 --executor dask --workers 2

# The reproduction report (docs/reproduction.md): the full protocol, every cut, three seeds, two splits of each of
# Fashion-MNIST and CIFAR-10, on a LocalCluster of two dask workers. Resumable: rerun it after an interruption.
# These recipes fit a two-core CPU; with a GPU, raise the width and epochs (the report states the settings it ran).
CIFAR10 ?= ../shared/data/cifar10
REPRO_FASHION_OPTS ?= --dataset fashion-mnist --split random --split clothing-accessories --seeds 0,1,2 \
	--arch caffenet-small --arch-option width=0.25 --train-per-class 500 --epochs 6 --batch-size 64 \
	--crop-padding 2 --schedule cosine --lr 0.02 --warmup 0.2
REPRO_CIFAR_OPTS ?= --dataset cifar10:$(CIFAR10) --split random --split vehicles-animals --seeds 0,1,2 \
	--arch caffenet-small --arch-option width=0.125 --arch-option dropout=0 --train-per-class 500 --epochs 10 \
	--batch-size 64 --crop-padding 4 --schedule cosine --lr 0.02 --warmup 0.2
REPRO_EXTRACT_OPTS ?= --probe-set both --per-class 100
DASK ?= --executor dask --workers 2

# The co-adaptation ladder: the selffer alone (bases and BnB/AnA at cuts 1, 3, 5, 7) on CIFAR-10's random split at
# three seeds, one rung per IMAGES:EPOCHS[:WIDTH] of LADDER_RUNGS (training images per class, --train-per-class: 5000
# is all of them, 4500 after the validation hold-out; epochs; and the width, LADDER_WIDTH where left out), then the
# layer resets of its bases (probe robustness). Each rung is a run directory of its own, so the ladder resumes rung by
# rung and a GPU extends it with other values, e.g.
#   make ladder LADDER_RUNGS=5000:30:1 DASK=
# The committed rungs: the data axis at width 1/8 (225 to 4,500 images per class) and the width axis at 225 per class.
# All were trained with LADDER_INIT=shared but the full training set's, which is committed under both.
LADDER_RUNGS ?= 250:30:0.125 250:30:0.25 250:30:0.5 500:30:0.125 1000:20:0.125 5000:12:0.125
LADDER_WIDTH ?= 0.125
# The initial weights of the ladder's networks: independent (the paper's design, and a rung named ...-independent),
# or shared (what the committed rungs used: make ladder LADDER_INIT=shared retrains them as they were)
LADDER_INIT ?= independent
LADDER_SUFFIX := $(if $(filter shared,$(LADDER_INIT)),,-$(LADDER_INIT))
LADDER_OPTS ?= --dataset cifar10:$(CIFAR10) --split random --seeds 0,1,2 --cuts 1,3,5,7 \
	--arch caffenet-small --arch-option dropout=0 --batch-size 64 --crop-padding 4 --schedule cosine --lr 0.02 \
	--warmup 0.2
# Model stitching, the CKA floor and the transfer networks on the ladder's largest converged rung: its run grows by
# AnB, RnB and the stitched networks (the rung's bases and selffers are reused), then its activations are extracted
# and the whole run is collected as docs/reproduction/LADDER_TOP_NAME and added to the ladder (its CKA profile).
# The committed runs trained one direction (A->B: the networks on task B) for the time two cores had;
# LADDER_TOP_NETWORKS= trains both. Two rungs are committed: the full training set (the default) and, collected as
# stitching-converged, 900 per class (make ladder-top LADDER_TOP=1000:20:0.125 LADDER_TOP_NAME=stitching-converged).
LADDER_TOP ?= 5000:12:0.125
LADDER_TOP_NAME ?= stitching-full-data
LADDER_TOP_VARIANTS ?= BnB,AnB,RnB,BnB-stitch,AnB-stitch
LADDER_TOP_NETWORKS ?= A1B,R1B,B1B-stitch,A1B-stitch,A3B,R3B,B3B-stitch,A3B-stitch,A5B,R5B,B5B-stitch,A5B-stitch,A7B,R7B,B7B-stitch,A7B-stitch

# Claim 8 and initialization: the random-weights baseline alone (bases and RnB at cuts 1, 3, 5, 7) on the random split
# of the reproduction's Fashion-MNIST and CIFAR-10 recipes at three seeds, under the paper's Gaussian initialization
# (Caffe's std 0.01) and under He's (probe's default for caffenet-small).
INIT_FASHION_OPTS ?= --dataset fashion-mnist --split random --seeds 0,1,2 --variants RnB --cuts 1,3,5,7 \
	--arch caffenet-small --arch-option width=0.25 --train-per-class 500 --epochs 6 --batch-size 64 \
	--crop-padding 2 --schedule cosine --lr 0.02 --warmup 0.2
INIT_CIFAR_OPTS ?= --dataset cifar10:$(CIFAR10) --split random --seeds 0,1,2 --variants RnB --cuts 1,3,5,7 \
	--arch caffenet-small --arch-option width=0.125 --arch-option dropout=0 --train-per-class 500 --epochs 10 \
	--batch-size 64 --crop-padding 4 --schedule cosine --lr 0.02 --warmup 0.2

# The recipe experiment (docs/reproduction.md, "Where the paper's dip comes from"): four arms fixed before they ran,
# the selffer alone on CIFAR-10's random split at cuts 3, 5, 7 and three seeds, independent initial weights unless
# the arm says otherwise, with the convergence check (bases twice as long). M-20 is the committed 900-per-class rung
# again; M-long and P-long share one long schedule (120 epochs at width 1/4, 450 images a class) and differ only in
# the recipe (the ladder's cosine with warm-up and no dropout; the paper's steps at 2/9, 4/9, 6/9, 8/9 of training,
# lr 0.01, dropout 0.5); P-long-shared is P-long under the shared initialization. Each arm is a resumable run
# directory. make recipe-pilot trained P-long's one-seed pilot first (width 1/4, 450 images a class); its bases did
# not fit their training set clearly better than they generalized, so the long arms moved, as fixed beforehand, to
# width 1/2 at 225 images a class (RECIPE_LONG). Each arm is collected with
#   .venv/bin/python -m probe.studies.reproduction recipe --add runs/recipe/ARM
# which commits its records (docs/reproduction/recipe/records/ARM.json.gz: every network's metrics, no weights); seeds
# trained in a later session, into a fresh runs/recipe/ARM with RECIPE_SEEDS naming them alone, join the committed
# ones with 'recipe --merge runs/recipe/ARM', and 'recipe --recollect' collects every recorded arm again.
RECIPE_COMMON ?= --dataset cifar10:$(CIFAR10) --split random --cuts 3,5,7 --variants BnB --arch caffenet-small \
	--batch-size 64 --crop-padding 4 --check-convergence
RECIPE_M ?= --schedule cosine --lr 0.02 --warmup 0.2 --arch-option dropout=0
RECIPE_P ?= --schedule step --lr 0.01 --warmup 0 --lr-step-every 0.2222222222222222 --lr-gamma 0.1 \
	--arch-option dropout=0.5 --weight-decay 0.0005
RECIPE_LONG ?= --arch-option width=0.5 --train-per-class 250 --epochs 120
RECIPE_PILOT ?= --arch-option width=0.25 --train-per-class 500 --epochs 120
RECIPE_SEEDS ?= 0,1,2
RECIPE_ARMS ?= M-20 P-long M-long P-long-shared
RECIPE_OPTS_M-20 = $(RECIPE_M) --arch-option width=0.125 --train-per-class 1000 --epochs 20
RECIPE_OPTS_M-long = $(RECIPE_M) $(RECIPE_LONG)
RECIPE_OPTS_P-long = $(RECIPE_P) $(RECIPE_LONG)
RECIPE_OPTS_P-long-shared = $(RECIPE_P) $(RECIPE_LONG) --init-sharing shared
# Added after the four ran (docs/reproduction.md says why): P-long under Caffe's Gaussian fillers, not in RECIPE_ARMS
RECIPE_OPTS_P-long-gaussian = $(RECIPE_P) $(RECIPE_LONG) --init gaussian
# Some networks of an arm alone (ids, comma-separated), e.g. a pilot's base: RECIPE_NETWORKS=random-s0/init0/baseB
RECIPE_NETWORKS ?=

# The positive control (docs/reproduction.md, "A positive control"; fixed before it ran): BnB with its frozen layer n
# rescaled by a dose (--dose: the base with layer n x F and n+1 / F computes the same function) on CIFAR-10's random
# split, caffenet-small at width 1/8, 900 training images a class, 20 epochs, under the paper's recipe (P) and the
# ladder's (M). Stage 1, CONTROL_STAGE=doses: every dose at n = 5, seed 0; stage 2, CONTROL_STAGE=cuts: the doses
# stage 1 kept (CONTROL_DOSES_P, CONTROL_DOSES_M) at n = 3, 5, 7, seeds 0-4, with the convergence check. Each arm is a
# resumable run directory, runs/control/STAGE-ARM, collected like a recipe arm:
#   .venv/bin/python -m probe.studies.reproduction control --add runs/control/cuts-P
CONTROL_COMMON ?= --dataset cifar10:$(CIFAR10) --split random --variants BnB --arch caffenet-small \
	--arch-option width=0.125 --train-per-class 1000 --epochs 20 --batch-size 64 --crop-padding 4
CONTROL_ALL_DOSES ?= 1/10,3,10,30,~10,~30
CONTROL_DOSES_P ?= $(CONTROL_ALL_DOSES)
CONTROL_DOSES_M ?= $(CONTROL_ALL_DOSES)
CONTROL_STAGE ?= doses
CONTROL_ARMS ?= P M
CONTROL_SEEDS ?= $(if $(filter doses,$(CONTROL_STAGE)),0,0,1,2,3,4)
CONTROL_STAGE_doses = --cuts 5 --dose $(CONTROL_ALL_DOSES)
CONTROL_STAGE_cuts = --cuts 3,5,7 --check-convergence
CONTROL_OPTS_P = $(RECIPE_P) $(if $(filter cuts,$(CONTROL_STAGE)),--dose $(CONTROL_DOSES_P))
CONTROL_OPTS_M = $(RECIPE_M) $(if $(filter cuts,$(CONTROL_STAGE)),--dose $(CONTROL_DOSES_M))

# Co-adaptation against the number of classes (docs/reproduction.md, "Co-adaptation and the number of classes";
# fixed before it ran): Tiny ImageNet (read in place from TINYIMAGENET) at 32 pixels, its random split with K classes a
# task (--classes-per-task K, a nested draw), caffenet-small at width 1/8, 150 training images a class (135 after the
# validation hold-out) at every rung, 60 epochs of the ladder's recipe; each rung the selffer alone at cuts 3, 5, 7,
# seeds 0-2, with the convergence check, a resumable run directory runs/classes/tin-kK collected with
#   .venv/bin/python -m probe.studies.reproduction classes --add runs/classes/tin-kK
# make classes-pilot trains the recipe's pilot first: the bases, B5B and A5A at K = 100, seed 0, collected with
#   .venv/bin/python -m probe.studies.reproduction classes --pilot runs/classes/pilot-k100-eE
TINYIMAGENET ?= ../shared/data/tiny-imagenet-200.tar.gz
# The pilot's rule chose the epochs: 30 did not fit (docs/reproduction.md says by how much), 60 did
CLASSES_EPOCHS ?= 60
CLASSES_COMMON ?= --dataset tinyimagenet:$(TINYIMAGENET) --image-size 32 --arch caffenet-small \
	--arch-option width=0.125 --train-per-class 150 --epochs $(CLASSES_EPOCHS) --batch-size 64 --crop-padding 4 $(RECIPE_M)
CLASSES_RUNGS ?= 5 10 25 50 100
CLASSES_SEEDS ?= 0,1,2
# The paper's dissimilar split beside a random one, 36 classes a task each (36 of Tiny ImageNet's 72 natural classes
# against 36 of its 128 man-made ones, drawn by seed; 72 before the pilot doubled the epochs): base, BnB and AnB at
# cuts 1, 3, 5, 7, seeds 0-2
DISSIMILAR_OPTS ?= --split natural-man-made --split random --classes-per-task 36 --variants BnB,AnB --cuts 1,3,5,7

# The device check (benchmarks/device_check.py): on any machine, GPU or CPU, installs what probe needs and the
# machine lacks from the wheels in GPU_WHEELS (no package index), then measures training and evaluation throughput of
# caffenet-small and one tiny protocol run through 'probe train --device auto', prints a table and writes JSON to
# benchmarks/results/. make gpu-wheels fills GPU_WHEELS here (PyPI needed): the wheels of zarr and dask, with what
# they need beyond the device machines' image, for GPU_PYTHON (the device's Python) on x86-64 Linux, pinned to .venv's
# versions; about 13 MiB. It runs with .venv's Python where there is one, else PYTHON (the one with torch).
GPU_WHEELS ?= wheels
GPU_PYTHON ?= 3.12
GPU_PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
	manylinux1_x86_64
CHECK_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

# One target at a time: the reproduction's sweeps each fill the machine (and make -j would run them together).
.NOTPARALLEL:

.PHONY: setup demo test fashion-mnist reproduction repro-fashion-mnist repro-cifar10 ladder ladder-top init-study \
	recipe-pilot recipe control classes-pilot classes-ladder dissimilar gpu-wheels gpu-check docs clean

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
	@echo "The whole protocol at every cut, three seeds and two splits of Fashion-MNIST and CIFAR-10, with what"
	@echo "reproduced and what did not: docs/reproduction.md"

reproduction: repro-fashion-mnist repro-cifar10
	$(BIN)/python -m probe.studies.reproduction render

repro-fashion-mnist: $(STAMP) fashion-mnist
	$(BIN)/probe train runs/repro-fashion-mnist $(REPRO_FASHION_OPTS) $(DASK)
	$(BIN)/probe extract runs/repro-fashion-mnist $(REPRO_EXTRACT_OPTS) $(DASK)
	$(BIN)/python -m probe.studies.reproduction collect runs/repro-fashion-mnist fashion-mnist --title Fashion-MNIST \
		--command "probe train runs/repro-fashion-mnist $(REPRO_FASHION_OPTS) $(DASK)" \
		--command "probe extract runs/repro-fashion-mnist $(REPRO_EXTRACT_OPTS) $(DASK)" \
		--command "python -m probe.studies.reproduction collect runs/repro-fashion-mnist fashion-mnist --title Fashion-MNIST"

repro-cifar10: $(STAMP)
	@test -d $(CIFAR10) || { echo "CIFAR-10 image-folder tree not found at $(CIFAR10); set CIFAR10=PATH"; exit 1; }
	$(BIN)/probe train runs/repro-cifar10 $(REPRO_CIFAR_OPTS) $(DASK)
	$(BIN)/probe extract runs/repro-cifar10 $(REPRO_EXTRACT_OPTS) $(DASK)
	$(BIN)/python -m probe.studies.reproduction collect runs/repro-cifar10 cifar10 --title CIFAR-10 \
		--command "probe train runs/repro-cifar10 $(REPRO_CIFAR_OPTS) $(DASK)" \
		--command "probe extract runs/repro-cifar10 $(REPRO_EXTRACT_OPTS) $(DASK)" \
		--command "python -m probe.studies.reproduction collect runs/repro-cifar10 cifar10 --title CIFAR-10"

ladder: $(STAMP)
	@test -d $(CIFAR10) || { echo "CIFAR-10 image-folder tree not found at $(CIFAR10); set CIFAR10=PATH"; exit 1; }
	for rung in $(LADDER_RUNGS); do \
		n=$${rung%%:*}; rest=$${rung#*:}; e=$${rest%%:*}; w=$${rest#*:}; [ "$$w" != "$$rest" ] || w=$(LADDER_WIDTH); \
		$(BIN)/probe train runs/ladder/cifar10-$$n-w$$w-e$$e$(LADDER_SUFFIX) $(LADDER_OPTS) --variants BnB \
			--train-per-class $$n --arch-option width=$$w --epochs $$e --init-sharing $(LADDER_INIT) $(DASK) \
			|| exit 1; \
		$(BIN)/probe robustness runs/ladder/cifar10-$$n-w$$w-e$$e$(LADDER_SUFFIX) || exit 1; \
	done
	$(BIN)/python -m probe.studies.reproduction ladder runs/ladder/cifar10-*
	$(BIN)/python -m probe.studies.reproduction render

ladder-top: $(STAMP)
	@test -d $(CIFAR10) || { echo "CIFAR-10 image-folder tree not found at $(CIFAR10); set CIFAR10=PATH"; exit 1; }
	rung=$(LADDER_TOP); n=$${rung%%:*}; rest=$${rung#*:}; e=$${rest%%:*}; w=$${rest#*:}; \
	run=runs/ladder/cifar10-$$n-w$$w-e$$e$(LADDER_SUFFIX); \
	$(BIN)/probe train $$run $(LADDER_OPTS) --init-sharing $(LADDER_INIT) --variants $(LADDER_TOP_VARIANTS) --train-per-class $$n \
		--arch-option width=$$w --epochs $$e --extend $(if $(LADDER_TOP_NETWORKS),--networks $(LADDER_TOP_NETWORKS)) \
		$(DASK) && \
	$(BIN)/probe extract $$run $(REPRO_EXTRACT_OPTS) $(DASK) && \
	$(BIN)/python -m probe.studies.reproduction collect $$run $(LADDER_TOP_NAME) \
		--title "Model stitching on a converged rung" \
		--command "make ladder-top LADDER_TOP=$(LADDER_TOP) LADDER_TOP_NAME=$(LADDER_TOP_NAME)" && \
	$(BIN)/python -m probe.studies.reproduction ladder --add $$run
	$(BIN)/python -m probe.studies.reproduction render

init-study: $(STAMP) fashion-mnist
	@test -d $(CIFAR10) || { echo "CIFAR-10 image-folder tree not found at $(CIFAR10); set CIFAR10=PATH"; exit 1; }
	for init in gaussian kaiming; do \
		$(BIN)/probe train runs/init/fashion-mnist-$$init $(INIT_FASHION_OPTS) --init $$init $(DASK) || exit 1; \
		$(BIN)/probe train runs/init/cifar10-$$init $(INIT_CIFAR_OPTS) --init $$init $(DASK) || exit 1; \
	done
	$(BIN)/python -m probe.studies.reproduction initialization runs/init/*
	$(BIN)/python -m probe.studies.reproduction render

recipe-pilot: $(STAMP)
	@test -d $(CIFAR10) || { echo "CIFAR-10 image-folder tree not found at $(CIFAR10); set CIFAR10=PATH"; exit 1; }
	$(BIN)/probe train runs/recipe/P-long-pilot $(RECIPE_COMMON) $(RECIPE_P) $(RECIPE_PILOT) --seeds 0 $(DASK)

recipe: $(STAMP)
	@test -d $(CIFAR10) || { echo "CIFAR-10 image-folder tree not found at $(CIFAR10); set CIFAR10=PATH"; exit 1; }
	$(foreach arm,$(RECIPE_ARMS),$(BIN)/probe train runs/recipe/$(arm) $(RECIPE_COMMON) $(RECIPE_OPTS_$(arm)) \
		--seeds $(RECIPE_SEEDS) $(if $(RECIPE_NETWORKS),--networks $(RECIPE_NETWORKS)) --extend $(DASK) && ) true

control: $(STAMP)
	@test -d $(CIFAR10) || { echo "CIFAR-10 image-folder tree not found at $(CIFAR10); set CIFAR10=PATH"; exit 1; }
	$(foreach arm,$(CONTROL_ARMS),$(BIN)/probe train runs/control/$(CONTROL_STAGE)-$(arm) $(CONTROL_COMMON) \
		$(CONTROL_STAGE_$(CONTROL_STAGE)) $(CONTROL_OPTS_$(arm)) --seeds $(CONTROL_SEEDS) --extend $(DASK) && ) true

classes-pilot: $(STAMP)
	$(BIN)/probe train runs/classes/pilot-k100-e$(CLASSES_EPOCHS) $(CLASSES_COMMON) --split random --classes-per-task 100 \
		--variants BnB --cuts 5 --seeds 0 $(DASK)

classes-ladder: $(STAMP)
	for k in $(CLASSES_RUNGS); do \
		$(BIN)/probe train runs/classes/tin-k$$k $(CLASSES_COMMON) --split random --classes-per-task $$k \
			--variants BnB --cuts 3,5,7 --check-convergence --seeds $(CLASSES_SEEDS) --extend $(DASK) || exit 1; \
		$(BIN)/python -m probe.studies.reproduction classes --add runs/classes/tin-k$$k || exit 1; \
	done

dissimilar: $(STAMP)
	$(BIN)/probe train runs/classes/tin-dissimilar $(CLASSES_COMMON) $(DISSIMILAR_OPTS) --seeds $(CLASSES_SEEDS) \
		--extend $(DASK)

gpu-wheels: $(STAMP)
	rm -f $(GPU_WHEELS)/*.whl
	$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version $(GPU_PYTHON) --implementation cp $(addprefix --platform ,$(GPU_PLATFORMS)) -d $(GPU_WHEELS) \
		$$($(BIN)/python benchmarks/device_check.py --pins)
	@du -sh $(GPU_WHEELS)

gpu-check:
	$(CHECK_PYTHON) benchmarks/device_check.py --wheels $(GPU_WHEELS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The manual (mkdocs.yml, pages in docs/), built strictly into site/: a broken link, a page missing from the nav or a
# docstring mkdocstrings cannot read fails the build. The command-line and API references are generated from the code.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs site
