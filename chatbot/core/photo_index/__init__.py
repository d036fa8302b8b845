"""The photo search index: SQLite for file state, a float16 matrix for the embeddings, MaxSim search.

`store.IndexStore` opens, checks and searches an index; `build.update_index` brings it up to date with
folders of images. numpy only: the model's image and text sides are passed in by the caller.
"""
