"""Plots draw Chinese labels with a font the project's own install brings."""

import warnings

import pytest
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

from sft_assets.core.exports import _stacked_bars
from sft_assets.core.plots import bar_png, plot_fonts

LABELS = ["代码问题", "建议类问题", "农学", "alpaca_en"]  # real category names of the shared corpora


def _missing_glyphs(text: str) -> list[str]:
    """Characters of ``text`` that no font of the plot's fallback list can draw."""
    files = font_manager.fontManager._find_fonts_by_props(font_manager.FontProperties(family=plot_fonts()))
    fonts = [FT2Font(str(path)) for path in files]
    return [ch for ch in text if not ch.isspace() and not any(font.get_char_index(ord(ch)) for font in fonts)]


def test_chinese_labels_have_glyphs_in_the_plot_fonts():
    assert plot_fonts()[-1] == "Noto Sans CJK SC"
    found = font_manager.findfont(font_manager.FontProperties(family="Noto Sans CJK SC"), fallback_to_default=False)
    assert "noto_cjk_sans_otc" in found  # the package from requirements, not whatever the machine has
    assert _missing_glyphs("".join(LABELS)) == []


def test_card_and_metadata_plots_render_chinese_without_missing_glyphs(tmp_path):
    """matplotlib warns "Glyph ... missing from font(s)" for every character it draws as a box."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"Glyph .* missing from", category=UserWarning)
        _stacked_bars(tmp_path / "categories.png", LABELS, {"kept": [3, 2, 1, 4], "dropped": [1, 1, 1, 1]}, "类别")
        png = bar_png(LABELS, [3, 2, 1, 4], "按类别")
    assert (tmp_path / "categories.png").stat().st_size > 0 and png.startswith(b"\x89PNG")


def test_the_check_sees_a_missing_glyph():
    with pytest.raises(UserWarning, match="missing from"), warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"Glyph .* missing from", category=UserWarning)
        bar_png(["\U000F0000"], [1], "private use")  # a private-use code point no font has
