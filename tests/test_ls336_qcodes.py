"""QCoDeS' ``LakeshoreModel336`` (qcodes 0.58, a test extra) against the emulated 336 over pyvisa-py's
TCPIP SOCKET resource, the transport QCoDeS users give it. What it reads is checked against the
emulator's state; where QCoDeS and the 336 emulator disagree (``HTRSET?``'s fields, outputs 3 and 4),
the disagreement is asserted as recorded in firmware_host/FIDELITY.md rows 336-26 and 336-27."""

from __future__ import annotations

import pytest

from firmware_host.emulator import Emulator

pytestmark = pytest.mark.slow  # qcodes' import and two refused queries waited out (about 1.5 s)

qcodes_lakeshore = pytest.importorskip("qcodes.instrument_drivers.Lakeshore")


@pytest.fixture
def rig():
    emu = Emulator.ls336(seed=5)
    _, port = emu.listen_tcp("127.0.0.1", 0)
    ls = qcodes_lakeshore.LakeshoreModel336("kelvinpi_ls336", f"TCPIP::127.0.0.1::{port}::SOCKET", visalib="@py")
    try:
        yield emu, ls
    finally:
        ls.close()
        emu.stop()


def test_qcodes_reads_inputs_and_outputs_1_2_and_sets_what_the_emulator_holds(rig):
    emu, ls = rig
    dev = emu.device
    assert ls.IDN()["model"] == "336" and ls.IDN()["serial"].startswith("LSA336A")
    for ch in ("A", "B", "C", "D"):
        inp = getattr(ls, ch)
        assert inp.sensor_name() == dev.ins[ch].name
        assert inp.temperature() > 0 and inp.sensor_raw() > 0 and inp.sensor_status() == "OK"
        assert inp.units() == "kelvin"
    assert ls.A.sensor_type() == "diode" and ls.C.sensor_type() == "ntc_rtd"
    out = ls.output_1
    out.input_channel("C")
    out.mode("closed_loop")
    out.P(40.0)
    out.setpoint(0.9)
    out.output_range("low")
    # read back through QCoDeS first: its writes get no reply, so its next query is what orders them
    assert (out.mode(), out.input_channel(), out.setpoint(), out.output_range()) == ("closed_loop", "C", 0.9, "low")
    o = dev.outputs[1]
    assert (o.mode, o.input, o.p, o.setp, o.range) == (1, 3, 40.0, pytest.approx(0.9), 1)
    assert 0 <= out.output() <= 100  # HTR? 1
    assert dev.dispatcher().handle_line("*ESR?") == "128"  # nothing refused: the power-on bit only


def test_qcodes_disagreements_are_the_recorded_ones(rig):
    """FIDELITY 336-26: QCoDeS' HTRSET group is the 335's (output type first, five fields); the 336's
    ``HTRSET?`` has four (lakeshore ``get_heater_setup``, socs ``get_heater_setup``), so QCoDeS' mapping
    fails on the second field. FIDELITY 336-27: QCoDeS queries ``HTR? 3``/``HTRSET? 3`` and offers
    outputs 3 and 4 off/low/medium/high; lakeshore gives them 0-1 and reads them with ``AOUT?``."""
    emu, ls = rig
    assert emu.device.dispatcher().handle_line("HTRSET? 1").count(",") == 3  # four fields
    with pytest.raises(KeyError, match="not in val_mapping"):
        ls.output_1.output_heater_resistance()
    ls.timeout(0.3)
    for query in (lambda: ls.output_3.output(), lambda: ls.output_3.output_type()):
        with pytest.raises(Exception, match="Timeout"):  # pyvisa's VisaIOError: silence, ESR 16
            query()
    disp = emu.device.dispatcher()
    assert disp.handle_line("*ESR?") == "144"  # the power-on bit and the execution error of those refusals
    assert disp.handle_line("RANGE 3,2;*ESR?") == "16"  # QCoDeS' "medium" on output 3
    assert disp.handle_line("RANGE 3,1;RANGE? 3") == "1"  # lakeshore's HeaterVoltageRange.ON
