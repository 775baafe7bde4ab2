"""sops_config.path_matches matches a path_regex as UTF-8 bytes (the fast form): it must
say yes or no exactly where the text form of the same RE2 pattern does."""

from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.spec.sops_config import path_matches, re2_compile

ATOMS = ["out/", "keys/", "\\.", ".", ".*", "[a-z]+", "[^/]*", "(a|b)", "\\d", "é", "ü+", "x?", "$", "^", "\\b", "(?i)KEY", "\\w+", "é?$"]
PATHS = ["out/keys/a.key.yaml", "out/keys/é.key.yaml", "OUT/KEYS/B", "out/x/ü.yaml", "", "a", "keys/12/b", "out/keys/ab-ü.key"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(ATOMS), min_size=1, max_size=5), st.sampled_from(PATHS) | st.text(max_size=20))
def test_the_bytes_form_answers_as_the_text_form(atoms: list[str], path: str) -> None:
    regex = "".join(atoms)
    compiled = re2_compile(regex)
    if compiled is None:
        return
    assert path_matches(regex, path) is (compiled.search(path) is not None), (regex, path)


def test_it_can_say_both_yes_and_no() -> None:
    assert path_matches(r"^out/keys/.*\.key\.yaml$", "out/keys/é.key.yaml")
    assert not path_matches(r"^out/keys/.*\.key\.yaml$", "out/certs/é.pem")
    assert path_matches(r"^out/keys/.\.key", "out/keys/é.key")  # one character, two bytes
