"""``python -m genlab``: the Hydra application over conf/."""

from genlab.train import main

if __name__ == "__main__":
    main()
