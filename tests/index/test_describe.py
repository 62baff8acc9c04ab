from diffagent.index.builder.describe import (
    CardFacts,
    TemplateRewriter,
    distinctive_terms,
    prompt_phrases,
)


def test_prompt_phrases_drop_weights_and_brackets() -> None:
    phrases = prompt_phrases(
        "(masterpiece:1.2), [best quality], Yae_Miko, a very long phrase "
        "with far too many words in it, 8k"
    )
    assert phrases == ["masterpiece", "best quality", "yae miko"]


def test_distinctive_terms_prefer_what_only_one_card_says() -> None:
    documents = [
        ["masterpiece, pixel art, corgi", "masterpiece, pixel art, castle"],
        ["masterpiece, watercolor, fox", "masterpiece, watercolor, harbor"],
        ["masterpiece, raw photo, fisherman"],
        [],
    ]
    terms = distinctive_terms(documents, top_k=2)
    assert terms[0][0] == "pixel art" and terms[1][0] == "watercolor"
    assert all("masterpiece" not in t[:1] for t in terms[:3])
    assert terms[3] == []
    filtered = distinctive_terms(documents, top_k=5, keep=lambda term: term != "pixel art")
    assert "pixel art" not in filtered[0]


def test_template_rewriter_uses_facts_only() -> None:
    facts = CardFacts(
        name="Pixel Art Style", version_name="v1", type="LORA", base_model="SD 1.5",
        tags=["pixel art", "game"], trigger_words=["pixel art"], keywords=["corgi", "castle"],
    )  # fmt: skip
    text = TemplateRewriter().describe(facts)
    assert text.startswith("Pixel Art Style v1: SD 1.5 LoRA for pixel art, game.")
    assert "Trigger words: pixel art." in text and "corgi, castle" in text
    bare = TemplateRewriter().describe(facts.model_copy(update={"tags": [], "keywords": []}))
    assert "feature" not in bare
