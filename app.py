"""ReTree Studio: draw a retinal vessel tree and watch a fundus photograph emerge; train and synthesise.

The entry point a Hugging Face Space runs (`python app.py`, see `python app.py --help`): the app is built
by `retree_studio` over the `retree_core` engine. API: `/generate` (README).
"""
from retree_studio.ui import main

if __name__ == "__main__":
    main()
