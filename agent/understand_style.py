"""Style vocabulary of chat messages: style words, rendering media, medium rewrites of a prompt."""

from __future__ import annotations

import re

# Style words a user may ask for, mapped to the term added to the prompt and the query.
STYLES: dict[str, str] = {
    "anime": "anime",
    "manga": "anime",
    "cartoon": "cartoon",
    "painterly": "painterly",
    "oil painting": "oil painting",
    "watercolor": "watercolor",
    "watercolour": "watercolor",
    "photorealistic": "photorealistic",
    "photoreal": "photorealistic",
    "realistic": "photorealistic",
    "photo": "photorealistic",
    "photograph": "photorealistic",
    "cinematic": "cinematic",
    "3d": "3d render",
    "3d render": "3d render",
    "pixel art": "pixel art",
    "pixelart": "pixel art",
    "sketch": "sketch",
    "pencil sketch": "sketch",
    "comic": "comic",
    "fantasy": "fantasy",
    "cyberpunk": "cyberpunk",
    "digital art": "digital art",
}
MEDIA = {
    "anime",
    "cartoon",
    "photorealistic",
    "3d render",
    "pixel art",
    "comic",
    "watercolor",
    "oil painting",
    "sketch",
}
"""Rendering media exclude each other: asking for one drops the others from the request."""

# Words of a card's tags, keywords and description that show it renders a style.
STYLE_EVIDENCE: dict[str, tuple[str, ...]] = {
    "anime": ("anime", "manga", "2d", "waifu", "niji", "cel shading"),
    "cartoon": ("cartoon", "toon", "disney", "pixar", "chibi"),
    "photorealistic": (
        "photorealistic",
        "photorealism",
        "realistic",
        "photo",
        "photography",
        "raw photo",
        "dslr",
        "real",
    ),
    "3d render": ("3d", "render", "cgi", "blender", "octane", "3d render"),
    "pixel art": ("pixel art", "pixel", "pixelart", "8bit", "16bit", "sprite"),
    "comic": ("comic", "comics", "comic book", "graphic novel"),
    "watercolor": ("watercolor", "watercolour", "ink wash", "gouache"),
    "oil painting": ("oil painting", "painting", "painterly", "impasto", "brush strokes"),
    "sketch": ("sketch", "lineart", "line art", "pencil", "drawing", "monochrome"),
    "painterly": ("painterly", "painting", "oil painting", "brush strokes", "impressionism"),
    "cinematic": ("cinematic", "film", "movie", "dramatic lighting"),
    "fantasy": ("fantasy", "magic", "dragon", "medieval"),
    "cyberpunk": ("cyberpunk", "neon", "sci-fi", "futuristic"),
    "digital art": ("digital art", "illustration", "concept art"),
}


def find_styles(text: str) -> list[str]:
    """The style terms a text names, in vocabulary order, each once."""
    lower = text.lower()
    found: list[str] = []
    for word, style in STYLES.items():
        if re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", lower) and style not in found:
            found.append(style)
    return found


def media_of(text: str) -> list[str]:
    """The rendering media a text names."""
    return [style for style in find_styles(text) if style in MEDIA]


def drop_media(prompt: str, keep: str) -> str:
    """`prompt` without the words of media other than `keep` ("a watercolor fox" -> "a fox")."""
    out = prompt
    for word, style in sorted(STYLES.items(), key=lambda item: -len(item[0])):
        if style not in MEDIA or style == keep:
            continue
        # "a photo of a cat" loses "a photo of"; "a watercolor fox" loses "watercolor".
        out = re.sub(rf"\b(?:an?\s+)?{re.escape(word)}\s+of\s+", "", out, flags=re.I)
        # "an anime girl" -> "a girl": the article follows the word that is now next.
        out = re.sub(
            rf"\b(an?)\s+{re.escape(word)}\s+(\w)",
            lambda m: ("an " if m.group(2).lower() in "aeiou" else "a ") + m.group(2),
            out,
            flags=re.I,
        )
        out = re.sub(rf"(?<![\w-]){re.escape(word)}(?:\s+style)?(?![\w-])", "", out, flags=re.I)
    out = re.sub(r"\s{2,}", " ", out)
    out = re.sub(r"\s+,", ",", out)
    out = re.sub(r",\s*(,\s*)+", ", ", out)
    return out.strip(" ,;")
