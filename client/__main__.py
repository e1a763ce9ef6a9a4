"""`python -m client`: the client CLI."""

from client.cli import main

if __name__ == "__main__":
    main()
