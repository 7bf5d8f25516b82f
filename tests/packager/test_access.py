"""Playback tokens: which paths a token opens."""

from __future__ import annotations

from packager import access

SECRET = "s"
RID = "R" * 22


def test_a_recordings_token_opens_its_replay_page_data() -> None:
    token = access.mint(SECRET, RID, 2000, scope="vod")
    for path in (f"/vod/{RID}/master.m3u8", f"/replay/{RID}/data.json"):
        assert access.verify(SECRET, path, token, 1000) is None, path
    assert access.verify(SECRET, f"/replay/{RID}/data.json", token, 3000) == (
        "expired playback token"
    )
    refused = {
        "another recording's data": (f"/replay/{'S' * 22}/data.json", token),
        "the live stream's token": (
            f"/replay/{RID}/data.json",
            access.mint(SECRET, RID, 2000),  # /hls/<id>/, not /vod/<id>/
        ),
        "not the data": (f"/replay/{RID}/other.json", token),
    }
    for name, (path, presented) in refused.items():
        assert access.verify(SECRET, path, presented, 1000) is not None, name


def test_a_non_ascii_digit_in_the_expiry_is_malformed_not_a_crash() -> None:
    """Fuzz finding: "²" passes str.isdigit() but not int(); it raised ValueError (a 500)."""
    signature = access.mint(SECRET, "demo", 2000).partition(".")[2]
    for expiry in ("2²00", "٢٠٠٠"):  # superscript two; Arabic-Indic digits
        token = f"{expiry}.{signature}"
        why = access.verify(SECRET, "/hls/demo/index.m3u8", token, 1000)
        assert why == "malformed playback token", expiry
