"""`python -m s5cli ...` (and `torchrun -m s5cli ...`) runs the same CLI as `s5`."""

from s5cli.cli.app import main

if __name__ == "__main__":
    main()
