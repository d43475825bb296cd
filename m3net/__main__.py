"""``python -m m3net`` is the ``m3net`` command."""
from m3net.cli import main

if __name__ == "__main__":
    main()
