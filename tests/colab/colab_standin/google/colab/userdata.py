"""``userdata.get`` as Colab's behaves: a secret's value, or SecretNotFoundError."""

import json
import os


class SecretNotFoundError(Exception):
    pass


def get(key):
    secrets = json.loads(os.environ.get("COLAB_STANDIN_SECRETS", "{}"))
    if key not in secrets:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return secrets[key]
