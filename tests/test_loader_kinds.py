"""A known checkpoint of the other kind is refused by its name before anything is downloaded: a search
checkpoint for a chat command, a chat checkpoint for indexing, offline or online."""

from __future__ import annotations

import pytest

from chatbot.core.runtime import open_engine_for
from chatbot.core.settings import Settings
from chatbot.engine.retrieval import open_retrieval_engine
from chatbot.errors import NotACheckpointError

NOT_CHAT = ("Salesforce/blip2-itm-vit-g is a BLIP-2 retrieval checkpoint (image-text matching), which can search "
            "images but not chat. Use it with `blip2-chat index` and `search`, and pass a chat model to --model (see "
            "`blip2-chat models`).")
NOT_SEARCH = ("Salesforce/blip2-opt-2.7b is a BLIP-2 chat checkpoint, which has no image-text retrieval heads to "
              "search with. Use a retrieval checkpoint such as Salesforce/blip2-itm-vit-g (alias itm-vit-g) for "
              "indexing and search.")


@pytest.fixture(params=["offline", "online"])
def hub(request, monkeypatch) -> list[str]:
    """Offline (HF_HUB_OFFLINE, as conftest sets it), or online with a hub that cannot be reached; the
    hub ids anything tried to download."""
    import huggingface_hub

    tried: list[str] = []
    if request.param == "online":
        def unreachable(repo_id: str, **kwargs: object) -> str:
            tried.append(repo_id)
            raise OSError("ConnectError: [Errno -2] Name or service not known")

        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    return tried


@pytest.mark.parametrize("name", ["itm-vit-g", "Salesforce/blip2-itm-vit-g"])
def test_a_search_checkpoint_for_chat_is_refused_by_name(hub, name: str) -> None:
    with pytest.raises(NotACheckpointError) as error:
        open_engine_for(Settings(model=name, device="cpu"), progress=lambda _said: None)
    assert str(error.value) == NOT_CHAT and hub == []


def test_a_chat_checkpoint_for_search_is_refused_by_name(hub) -> None:
    with pytest.raises(NotACheckpointError) as error:
        open_retrieval_engine("opt-2.7b", device="cpu")
    assert str(error.value) == NOT_SEARCH and hub == []
