"""The photo search index: SQLite for file state, a float16 matrix for the embeddings, MaxSim search.

`store.IndexStore` opens, checks and searches an index (on `database`, the SQLite connection and the matrix as
read, and `compaction`, which gives unused rows' space back); `folder` keeps the folder it lives in (made, locked,
set aside, rebuilt); `rebuild.open_rebuild` makes a --rebuild's index beside the old one; `build.update_index`
brings it up to date with folders of images. numpy only: the
model's image and text sides are passed in by the caller.
"""
