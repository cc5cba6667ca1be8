"""The Kaggle download: the key reaches kagglehub and nothing else (no print, no file, no error
message), and a failed download says what to do about its cause."""

import numpy as np
import pytest

import helpers
from support import FAKE_TOKEN, write_kaggle_folder, write_png


def test_download_path_end_to_end_never_shows_the_key(clean_env, monkeypatch, tmp_path, capsys):
    """The real credential path (only kagglehub's download stubbed): the key is in nothing printed or written."""
    import kagglehub

    monkeypatch.setenv("KAGGLE_API_TOKEN", FAKE_TOKEN)
    download = tmp_path / "kagglehub-cache" / "tgs"
    written = write_kaggle_folder(download, count=4)
    write_png(download / "test" / "images" / "t1.png", np.repeat(written.images[0][..., None], 3, axis=2))
    asked = []

    def competition_download(handle, *args, **kwargs):
        from kagglehub.config import get_kaggle_credentials

        asked.append((handle, get_kaggle_credentials().api_key == FAKE_TOKEN))
        return str(download)

    monkeypatch.setattr(kagglehub, "competition_download", competition_download)
    data = helpers.load_salt_data(cache_dir=tmp_path / "data")
    assert asked == [(helpers.COMPETITION, True)]
    assert data.folder == download and helpers.list_test_ids(data.folder) == ["t1"]
    printed = capsys.readouterr()
    assert FAKE_TOKEN not in printed.out + printed.err
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaks


def _connection_error(text):
    import requests

    return requests.exceptions.ConnectionError(text)


@pytest.mark.parametrize("make_error, says", [
    (lambda: RuntimeError(f"403 Client Error: Forbidden for url ...?key={FAKE_TOKEN}"),
     ["403 Client Error: Forbidden", "accept them", "/rules"]),
    (lambda: RuntimeError(f"401 Client Error: Unauthorized ... token={FAKE_TOKEN}"),
     ["did not accept the credentials", "KAGGLE_API_TOKEN"]),
    (lambda: _connection_error(f"Max retries exceeded ... token={FAKE_TOKEN}"),
     ["ConnectionError", "internet connection", "SALT_DATA_DIR", "synthetic"]),
    (lambda: RuntimeError("404 Client Error: Not Found for url https://www.kaggle.com/api/v1/competitions/x"),
     ["404 Client Error: Not Found", "does not find the competition"]),
    (lambda: RuntimeError(f"429 Client Error: Too Many Requests key={FAKE_TOKEN}"),
     ["429 Client Error: Too Many Requests", "wait a few minutes"]),
    (lambda: RuntimeError("503 Server Error: Service Unavailable"), ["503 Server Error", "servers failed"]),
    (lambda: OSError(28, "No space left on device"), ["No space left on device", "disk is full"]),
], ids=["rules-not-accepted", "bad-token", "no-network", "not-found", "rate-limited", "server-error", "disk-full"])
def test_a_failed_download_says_what_to_do_and_never_echoes_the_key(monkeypatch, make_error, says):
    import kagglehub

    def fail(handle, *args, **kwargs):
        raise make_error()

    monkeypatch.setattr(kagglehub, "competition_download", fail)
    with pytest.raises(helpers.SaltDataError) as error:
        helpers.download_from_kaggle()
    message = str(error.value)
    assert all(words in message for words in says), message
    assert FAKE_TOKEN not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # the original, with its text, is not chained
