"""The ``m3net`` command: a thin click front end.

Each command only parses options, builds the stage's config and calls a library function;
the work lives in m3net.extract, m3net.cache, m3net.kernels and m3net.*.
"""
import sys

import click

from m3net import __version__


def _not_built(name):
    """Commands whose stage is not implemented yet say so and fail; they never fake output."""
    click.echo(f"m3net {name}: not built yet in m3net {__version__}.", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="m3net")
def main():
    """m3net: few-shot fine-grained action recognition (M3Net, ACM MM 2023).

    Stage one (`extract`) runs an ImageNet ResNet-50 once over every clip and caches per-frame
    7x7x2048 maps in HDF5; stage two (`train-head`, `evaluate`) trains and scores the few-shot
    heads on that cache; `finetune` trains backbone and head end to end.
    """


@main.command("extract")
def extract_cmd():
    """Run the backbone over a dataset's clips and write the HDF5 feature cache."""
    _not_built("extract")


@main.command("train-head")
def train_head_cmd():
    """Train a few-shot head episodically on a feature cache."""
    _not_built("train-head")


@main.command("evaluate")
def evaluate_cmd():
    """Score heads on seeded test episodes (accuracy +- 95% CI)."""
    _not_built("evaluate")


@main.command("finetune")
def finetune_cmd():
    """Train backbone and head end to end on decoded frames."""
    _not_built("finetune")


@main.command("predict")
def predict_cmd():
    """Classify query clips against a folder of labelled support clips."""
    _not_built("predict")


@main.command("demo")
def demo_cmd():
    """Whole pipeline offline on the generated benchmark."""
    _not_built("demo")


@main.command("dataset-info")
def dataset_info_cmd():
    """Classes and clips per split of a dataset; with --root, which clips are found."""
    _not_built("dataset-info")


@main.command("bench-dtw")
def bench_dtw_cmd():
    """Benchmark the DTW kernel against the torch reference and peers."""
    _not_built("bench-dtw")


if __name__ == "__main__":
    main()
