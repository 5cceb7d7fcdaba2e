import json
import subprocess
import sys

import yaml

from tests.pipeline_fixture import env


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, env=env(), check=True, capture_output=True)


def commit_version(root, ppl, top1, alpha_o, kp, message):
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports/metrics.json").write_text(json.dumps(
        {"smollm2-135m": {"marr-w3g128": {"ppl_wiki": ppl}}, "dinov2-s": {"marr-w4": {"probe_top1": top1}}}))
    (root / "params.yaml").write_text(yaml.safe_dump({"configs": {"marr-w3g128": {"method": "marr", "pid": {"kp": kp}}}}))
    (root / "alphas/smollm2-135m").mkdir(parents=True, exist_ok=True)
    (root / "alphas/smollm2-135m/marr-w3g128.csv").write_text(
        "block,module,alpha,j_rel,solves\n0,self_attn.q_proj,0.25,0.01,3\n0,self_attn.o_proj,%s,0.02,4\n" % alpha_o)
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


def audit(root, *args):
    return subprocess.run([sys.executable, "-m", "pipelines.audit", *args], cwd=root, env=env(),
                          capture_output=True, text=True)


def test_audit_reports_changes_and_fails_on_regression(tmp_path):
    root = tmp_path
    git(root, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, env=env(), check=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": {
        "cmd": "true", "params": ["configs.marr-w3g128"],
        "metrics": [{"reports/metrics.json": {"cache": False}}]}}}))
    commit_version(root, 30.0, 0.90, 0.5, 1.0, "v1")
    commit_version(root, 33.0, 0.91, 0.9, 0.5, "v2")

    failed = audit(root, "HEAD~1", "HEAD", "--threshold", "0.05")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    out = failed.stdout
    assert "| smollm2-135m | marr-w3g128 | ppl_wiki |" in out and "30" in out and "33" in out
    assert "configs.marr-w3g128.pid.kp" in out
    assert "self_attn.o_proj" in out.split("α changed most")[1].split("\n\n")[1]
    assert "FAILED: ppl_wiki regressed" in out

    tolerant = audit(root, "HEAD~1", "HEAD", "--threshold", "0.2")
    assert tolerant.returncode == 0, tolerant.stdout
    # accuracy goes the other way: a higher top-1 is no regression
    assert audit(root, "HEAD~1", "HEAD", "--metric", "probe_top1", "--threshold", "0.0").returncode == 0
