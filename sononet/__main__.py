"""``python -m sononet`` (also what ``torchrun -m sononet`` runs)."""

from sononet.cli import main

if __name__ == "__main__":
    main()
