from conftest import NOW, snapshot


def test_init_plan_apply_noop(repo, pkic):
    p = pkic.ok("plan", "--now", NOW, cwd=repo)
    assert "4 to issue" in p.stdout
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    before = snapshot(repo / "out")
    p = pkic("plan", "--detailed-exitcode", "--now", NOW, cwd=repo)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No changes" in p.stdout
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    assert snapshot(repo / "out") == before
