"""The command line's rule for bad input, as one assertion the CLI tests share."""


def one_error(code: int, err: list[str], *needles: str) -> str:
    """Exit status non-zero; the last stderr line is the only `error:` line and names every
    needle; no traceback (Lightning's own start-up lines may come before it). Returns it."""
    assert code != 0, err
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in line for line in err), err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
