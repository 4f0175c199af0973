import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.cli import main
from harness.devices import device_name, resolve_device
from adapters.api.errors import InputError


def image_folder(tmp_path):
    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return str(folder)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device 'tpu7'"):
        resolve_device("tpu7")
    assert device_name(torch.device("cpu"))


def test_a_cpu_is_named_with_its_instruction_set_and_generation():
    """Two "AMD EPYC" machines that train different weights must not share a name."""
    name = device_name(torch.device("cpu"))
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    family, number = re.search(r"^cpu family\s*:\s*(\d+)$", info, re.M), re.search(r"^model\s*:\s*(\d+)$", info, re.M)
    isa = torch.backends.cpu.get_cpu_capability()
    if model and family and number:
        assert name == f"{model.group(1).strip()} ({isa}, family {family.group(1)} model {number.group(1)})"
    else:
        assert name.endswith(f"({isa})")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_an_input_error(name):
    with pytest.raises(InputError, match=f"--device {name}.*sees no CUDA device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_commands_exit_2_on_bad_devices_and_batch_sizes(tmp_path, capsys):
    ref = image_folder(tmp_path)
    out = tmp_path / "run.csv"
    assert main(["eval", "--model", "sit-b2", "--num-samples", "4", "--ref", ref, "--batch-size", "2",
                 "--seed", "0", "--device", "cuda", "--out", str(out)]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as exit_:
        main(["fid", ref, ref, "--batch-size", "0"])
    assert exit_.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


def test_eval_refuses_a_foreign_out_file_before_sampling(tmp_path, capsys):
    out = tmp_path / "notes.csv"
    out.write_text("a,b\n1,2\n")
    assert main(["eval", "--model", "sit-b2", "--num-samples", "4", "--ref", image_folder(tmp_path),
                 "--batch-size", "2", "--seed", "0", "--out", str(out)]) == 2
    assert "lacks the result columns" in capsys.readouterr().err
    assert out.read_text() == "a,b\n1,2\n"
