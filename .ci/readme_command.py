"""Prints the README's Nth shell command block (1: install + demo, 2: install + tests), so CI runs
what the README says and fails when the two part. Standard library only: it runs before any install."""
import pathlib
import sys

FENCE = "```bash\n"


def readme_commands(readme):
    """The README's ```bash blocks in order, each stripped."""
    return [block.split("```", 1)[0].strip() for block in readme.split(FENCE)[1:]]


if __name__ == "__main__":
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    print(readme_commands(readme.read_text(encoding="utf-8"))[int(sys.argv[1]) - 1])
