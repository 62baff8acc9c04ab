import gzip
import shutil
from pathlib import Path

import pytest

from diffagent.index.builder.civitai import file_hashes, iter_items, iter_models, primary_file

FIXTURE = Path(__file__).parent / "fixtures" / "civitai-models.jsonl"


def test_plain_and_gzip_read_the_same_items(tmp_path: Path) -> None:
    packed = tmp_path / "models.jsonl.gz"
    with FIXTURE.open("rb") as source, gzip.open(packed, "wb") as target:
        shutil.copyfileobj(source, target)
    plain = list(iter_models([FIXTURE]))
    assert len(plain) == 12
    assert list(iter_models([packed])) == plain


def test_several_files_are_read_in_order(tmp_path: Path) -> None:
    ids = [item["id"] for item in iter_models([FIXTURE, FIXTURE])]
    assert ids[:12] == ids[12:]


def test_a_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1, "modelVersions": []}\n\n{"id": 2, "modelVer\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:3"):
        list(iter_items(path))


def test_items_that_are_not_models_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "images.jsonl"
    path.write_text('{"id": 7, "url": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="modelVersions"):
        list(iter_models([path]))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        list(iter_items(tmp_path / "nothere.jsonl"))


def test_primary_file_and_hashes() -> None:
    version = next(iter_models([FIXTURE]))["modelVersions"][0]
    file = primary_file(version)
    assert file is not None and file["name"] == "dreamyMix_v2.safetensors"
    assert file_hashes(file)["AUTOV2"] == file_hashes(file)["SHA256"][:10]
    assert primary_file({"files": [{"name": "a"}, {"name": "b"}]}) == {"name": "a"}
    assert primary_file({"files": []}) is None


def test_image_ratings_from_either_endpoint() -> None:
    from diffagent.index.builder.civitai import image_rating

    assert image_rating({"nsfw": "Soft"}) == "Soft"  # /models sample images
    assert image_rating({"nsfw": False, "nsfwLevel": "None"}) == "None"  # /images items
    assert image_rating({"nsfw": True, "nsfwLevel": 4}) == "Mature"
    assert image_rating({"nsfw": True, "nsfwLevel": 16}) == "X"
    assert image_rating({"nsfw": True}) == "X"
    assert image_rating({"nsfw": False}) == "None"


def test_crawled_images_join_their_version(tmp_path: Path) -> None:
    import json

    from diffagent.index.builder.civitai import attach_images

    meta = {"prompt": "raw photo of a lighthouse", "Size": "512x512", "Model hash": "X"}
    images = [
        {"id": 60001, "nsfw": False, "nsfwLevel": "None", "meta": meta, "modelVersionId": 1003},
        {"id": 60002, "nsfw": True, "nsfwLevel": "X", "meta": meta, "modelVersionId": 1003},
        {"id": 50007, "nsfw": False, "nsfwLevel": "None", "meta": meta, "modelVersionId": 1003},
        {"id": 60003, "nsfw": False, "meta": meta, "modelVersionIds": [1003, 1010]},
    ]
    path = tmp_path / "images.jsonl"
    path.write_text("".join(json.dumps(image) + "\n" for image in images), encoding="utf-8")
    counts: dict[str, int] = {}
    models = {m["id"]: m for m in attach_images(iter_models([FIXTURE]), [path], counts)}
    version = models[102]["modelVersions"][0]
    ids = [image["id"] for image in version["images"]]
    assert ids == [50007, 50008, 60001, 60002]
    assert version["images"][-1]["nsfw"] == "X"
    assert counts == {"images_attached": 2, "images_without_version": 1}
