"""The dense channel on a real Chroma server (`chroma run` on loopback): same results as local."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import chromadb
from chromadb.config import Settings

from diffagent.cards import write_cards
from diffagent.index.search import CatalogIndex
from diffagent.index.search.dense import server_collection_name
from diffagent.index.search.embeddings import MiniLMEmbeddingFunction
from diffagent.tools.testing.servers import chroma_server

from ..fakes import make_card

CARDS = [
    make_card(11, "DreamShaper", tags=["fantasy", "castle", "dragon"]),
    make_card(12, "Realistic Vision", tags=["photo", "portrait", "dslr"]),
    make_card(13, "Anything V5", tags=["anime", "girl", "cherry blossoms"]),
    make_card(14, "Pixel Art Style", kind="LORA", tags=["pixel art", "retro", "8bit"]),
    make_card(15, "Ink Wash", kind="LORA", tags=["ink", "watercolor", "koi"]),
    make_card(21, "Juggernaut XL", base="SDXL 1.0", tags=["photo", "cinematic"]),
]
QUERIES = ["a dragon over a castle", "portrait photo, dslr", "koi pond in ink", "retro 8bit hero"]


def test_dense_channel_on_a_chroma_server_matches_the_local_index(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "catalog"
    write_cards(CARDS, catalog_dir / "cards.jsonl")
    embed = MiniLMEmbeddingFunction()
    local = CatalogIndex.open(catalog_dir, tmp_path / "local", embedding_function=embed)
    with chroma_server() as url:
        remote = CatalogIndex.open(
            catalog_dir, tmp_path / "remote", embedding_function=embed, chroma_url=url
        )
        for query in QUERIES:
            ours = [hit.card.version_id for hit in remote.query(query, k=4)]
            assert ours == [hit.card.version_id for hit in local.query(query, k=4)]
        found = remote.nearest_by_name("Dreamshapr", k=1)
        assert found[0].card.version_id == 11
        filtered = remote.query("photo", k=3, base_model="SDXL 1.0")
        assert [hit.card.version_id for hit in filtered] == [21]
        remote.close()

        # The vectors live on the server, not in the index folder.
        assert not (tmp_path / "remote" / "chroma").exists()
        address = urlsplit(url)
        client = chromadb.HttpClient(
            host=address.hostname, port=address.port, settings=Settings(anonymized_telemetry=False)
        )
        name = server_collection_name(tmp_path / "remote" / "chroma")
        assert client.get_collection(name).count() == len(CARDS)

        # A second worker with the same index folder finds the collection: nothing re-embedded.
        again = CatalogIndex.open(
            catalog_dir, tmp_path / "remote", embedding_function=embed, chroma_url=url
        )
        assert again.build().embedded == 0
        assert again.query(QUERIES[0], k=1)[0].card.version_id == 11
        again.close()
    local.close()
