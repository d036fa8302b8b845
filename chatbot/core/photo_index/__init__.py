"""The photo search index: SQLite for file state, a float16 matrix for the embeddings, MaxSim search.

`store.IndexStore` opens, checks and searches an index; `folder` keeps the folder it lives in (made, locked,
set aside, rebuilt); `build.update_index` brings it up to date with folders of images. numpy only: the
model's image and text sides are passed in by the caller.
"""
