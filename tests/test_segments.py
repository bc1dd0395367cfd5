from __future__ import annotations

import pytest

from cascade_async import SHORT_URL_LENGTH, SegmentInfo, SmsEncoding, sms_segments

GSM = SmsEncoding.GSM7
UCS2 = SmsEncoding.UCS2
EMOJI = "\U0001f600"  # outside the BMP: a surrogate pair, two UTF-16 units


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        pytest.param("", GSM, 0, 0, id="empty text costs nothing"),
        pytest.param("Hello", GSM, 5, 1, id="plain ascii"),
        pytest.param("a" * 160, GSM, 160, 1, id="160 gsm characters fit one part"),
        pytest.param("a" * 161, GSM, 161, 2, id="161 gsm characters take two parts"),
        pytest.param("a" * 306, GSM, 306, 2, id="153 times 2 fit two parts"),
        pytest.param("a" * 307, GSM, 307, 3, id="153 times 2 plus 1 takes three parts"),
        pytest.param("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", GSM, 44, 1, id="gsm basic accents and greek"),
        pytest.param("€", GSM, 2, 1, id="euro is an extension character counting two"),
        pytest.param("^{}\\[~]|€\f", GSM, 20, 1, id="every extension character counts two"),
        pytest.param("a" * 158 + "{", GSM, 160, 1, id="extension character ending exactly at 160"),
        pytest.param("a" * 159 + "{", GSM, 161, 2, id="extension character pushing past 160"),
        pytest.param("a" * 152 + "€" + "a" * 152, GSM, 306, 3, id="escape pair is not split across parts"),
        pytest.param("a" * 151 + "€" + "a" * 153, GSM, 306, 2, id="escape pair ending a part exactly"),
        pytest.param("ж" * 70, UCS2, 70, 1, id="70 ucs2 characters fit one part"),
        pytest.param("ж" * 71, UCS2, 71, 2, id="71 ucs2 characters take two parts"),
        pytest.param("ж" * 134, UCS2, 134, 2, id="67 times 2 fit two parts"),
        pytest.param("ж" * 135, UCS2, 135, 3, id="67 times 2 plus 1 takes three parts"),
        pytest.param("a" * 69 + "ж", UCS2, 70, 1, id="one cyrillic letter makes the whole text ucs2"),
        pytest.param("€" * 70 + "ж", UCS2, 71, 2, id="extension characters count one in ucs2"),
        pytest.param(EMOJI, UCS2, 2, 1, id="an emoji counts two units"),
        pytest.param("ж" * 68 + EMOJI, UCS2, 70, 1, id="emoji ending exactly at 70"),
        pytest.param("ж" * 69 + EMOJI, UCS2, 71, 2, id="emoji pushing past 70"),
        pytest.param("ж" * 66 + EMOJI + "ж" * 66, UCS2, 134, 3, id="surrogate pair is not split across parts"),
        pytest.param("ж" * 65 + EMOJI + "ж" * 67, UCS2, 134, 2, id="surrogate pair ending a part exactly"),
        pytest.param("ç", UCS2, 1, 1, id="lower case c cedilla is not gsm"),
    ],
)
def test_segments_match_known_cases(text: str, encoding: SmsEncoding, units: int, segments: int) -> None:
    info = sms_segments(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)
    assert info.characters == len(text)


@pytest.mark.parametrize(
    ("text", "char", "index"),
    [
        pytest.param("Order shipped ✓", "✓", 14, id="a check mark"),
        pytest.param("Привіт", "П", 0, id="cyrillic at the start"),
        pytest.param("Hi " + EMOJI, EMOJI, 3, id="an emoji"),
        pytest.param("Tab\there", "\t", 3, id="a tab is not gsm"),
    ],
)
def test_the_first_non_gsm_character_and_its_index_say_why(text: str, char: str, index: int) -> None:
    info = sms_segments(text)
    assert info.encoding is UCS2
    assert (info.first_non_gsm, info.first_non_gsm_index) == (char, index)


def test_a_gsm_text_names_no_offending_character() -> None:
    info = sms_segments("All fine [ok]")
    assert info.first_non_gsm is None
    assert info.first_non_gsm_index is None


def test_a_short_url_is_counted_at_the_assumed_length_and_says_so() -> None:
    info = sms_segments("Track: %short_url=7%")
    assert info.characters == len("Track: ") + SHORT_URL_LENGTH
    assert any("short_url" in note for note in info.assumed)


def test_a_known_url_value_is_counted_as_delivered() -> None:
    url = "https://shop.example/" + "ж"
    info = sms_segments("See %url=3%", values={3: url})
    assert info.characters == len("See ") + len(url)
    assert info.encoding is UCS2
    assert info.assumed == ()


def test_an_unknown_name_value_is_counted_as_written_and_says_so() -> None:
    info = sms_segments("Hi %name=9%")
    assert info.characters == len("Hi %name=9%")
    assert info.assumed == ("%name=9% counted as written (value not known)",)


def test_a_literal_percent_is_not_a_placeholder() -> None:
    assert sms_segments("50% off").assumed == ()


@pytest.mark.parametrize(
    ("info", "per_part"),
    [
        pytest.param(sms_segments("a"), 160, id="gsm single"),
        pytest.param(sms_segments("a" * 200), 153, id="gsm multi"),
        pytest.param(sms_segments("ж"), 70, id="ucs2 single"),
        pytest.param(sms_segments("ж" * 100), 67, id="ucs2 multi"),
    ],
)
def test_per_part_capacity_follows_encoding_and_length(info: SegmentInfo, per_part: int) -> None:
    assert info.per_part == per_part
