"""emonPi line parsing (all three firmware formats), the reader's bookkeeping and meter specs."""

from __future__ import annotations

import pytest

from pytest_irene.errors import UsageError
from pytest_irene.rig.meters import MeterError, MeterWarning, parse_meter_spec
from pytest_irene.rig.meters.emonpi import EmonPiReader
from pytest_irene.rig.meters.emonpi_lines import MalformedLine, encode_jeelib, parse_line
from pytest_irene.rig.meters.nvml import NvmlMeter
from pytest_irene.rig.meters.rapl import RaplMeter

# The emonPi's own packet as the classic firmware prints it: P1 253 W, P2 0, P1+2 253, Vrms 239.98 V,
# six temperature sensors absent (300.0 degC), pulse count 0.
JEELIB_LINE = "OK 5 253 0 0 0 253 0 190 93 184 11 184 11 184 11 184 11 184 11 184 11 0 0 0 0 (-0)\r\n"


def test_kv_line() -> None:
    report = parse_line("MSG:17,Vrms:240.12,P1:253,P2:7,P3:0,P4:0,E1:12,E2:0,E3:0,E4:0,pulse:3\r\n")
    assert report is not None and report.firmware == "kv"
    assert report.msg == 17
    assert report.values["Vrms"] == pytest.approx(240.12)
    assert report.values["E1"] == 12 and report.values["pulse"] == 3
    assert report.power_w(("P1",)) == 253
    assert report.power_w(("P1", "P2")) == 260


def test_kv_three_phase_v1_is_the_voltage() -> None:
    report = parse_line(b"MSG:2,V1:231.5,V2:230.1,V3:229.9,P1:100,P2:50,P3:25,E1:0,pulse:0\r\n")
    assert report is not None
    assert report.values["Vrms"] == pytest.approx(231.5)
    assert report.power_w(("P1", "P2", "P3")) == 175


def test_json_line() -> None:
    report = parse_line('{"MSG":4,"Vrms":239.5,"P1":1200,"P2":-3,"E1":5,"pulse":0}\r\n')
    assert report is not None and report.firmware == "json"
    assert report.msg == 4 and report.power_w(("P1", "P2")) == 1197


def test_json_non_numeric_fields_are_ignored() -> None:
    report = parse_line('{"MSG":5,"Vrms":239.5,"P1":800,"T1":null,"status":"ok","E1":2}')
    assert report is not None and report.power_w(("P1",)) == 800 and "T1" not in report.values


def test_jeelib_line_little_endian_fields() -> None:
    report = parse_line(JEELIB_LINE)
    assert report is not None and report.firmware == "jeelib" and report.msg is None and report.node == 5
    assert report.values["P1"] == 253 and report.values["P2"] == 0 and report.values["P1_2"] == 253
    assert report.values["Vrms"] == pytest.approx(239.98)
    assert report.values["T1"] == pytest.approx(300.0)
    assert report.values["pulse"] == 0


def test_jeelib_signed_and_multibyte_values_round_trip() -> None:
    line = encode_jeelib({"P1": 1834, "P2": -25, "P1_2": 1809, "Vrms": 241.07, "pulse": 70000}, rssi=42)
    assert line.endswith("(-42)")
    report = parse_line(line)
    assert report is not None
    assert report.values["P1"] == 1834 and report.values["P2"] == -25
    assert report.values["Vrms"] == pytest.approx(241.07)
    assert report.values["pulse"] == 70000


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\r\n",
        "emonPi V1.9.0",
        "OpenEnergyMonitor.org",
        "|Band: 433.92 MHz, Group: 210, Node: 5",
        "startup...",
        # a packet relayed from another RF node (an emonTx on node 10): not the emonPi's own
        "OK 10 42 0 0 0 42 0 96 93 (-67)",
    ],
)
def test_banners_noise_and_other_nodes_are_not_reports(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize(
    "line, why",
    [
        ("MSG:5,Vrms:240.1,P1:2\x93\x01,P2:0", "undecodable"),
        ('{"MSG":6,"Vrms":240.1,"P1":1', "invalid JSON"),
        ('{"MSG":6,"Vrms":NaN,"P1":100}', "not a number"),
        ("OK 5 253 0 0 0 253 0 190 93 184", "damaged JeeLib"),
        ("OK 5 253 0 0 0 253 0 (-0)", "expected 24"),
        ("OK 5 999 0 0 0 253 0 190 93 184 11 184 11 184 11 184 11 184 11 184 11 0 0 0 0 (-0)", "out of range"),
        ("Vrms:240.1,P1:100", None),  # no MSG: not a report start at all
        ("MSG:x,P1:100", "undecodable"),
    ],
)
def test_damaged_reports_are_rejected_not_guessed(line: str, why: str | None) -> None:
    if why is None:
        assert parse_line(line) is None
        return
    with pytest.raises(MalformedLine, match=why):
        parse_line(line)


def test_garbage_before_a_report_is_dropped() -> None:
    report = parse_line(b"\xff\x13#!MSG:3,Vrms:2MSG:4,Vrms:240.0,P1:99,E1:0,pulse:0\r\n")
    assert report is not None and report.msg == 4 and report.values["P1"] == 99
    assert parse_line("\x00\x00" + JEELIB_LINE).values["P1"] == 253  # type: ignore[union-attr]


def _reader(**kwargs) -> EmonPiReader:
    return EmonPiReader("/dev/null-not-opened", 115200, period_s=1.0, **kwargs)


def kv(msg: int, p1: float, p2: float = 0.0) -> str:
    return f"MSG:{msg},Vrms:240.00,P1:{p1},P2:{p2},E1:0,E2:0,pulse:0\r\n"


def test_energy_is_the_integral_of_reported_average_power() -> None:
    reader = _reader()
    # reports at t = 10, 11, 12, 13: each is the average power of the second before it
    for i, power in enumerate([100, 200, 300, 400]):
        reader.feed_line(kv(i + 1, power), 10.0 + i)
    m = reader.energy_between(10.5, 12.5, wait=False)
    # (10.5, 11] at 200 W, (11, 12] at 300 W, (12, 12.5] at 400 W
    assert m.energy_j == pytest.approx(0.5 * 200 + 300 + 0.5 * 400)
    assert m.duration_s == pytest.approx(2.0) and m.power_w == pytest.approx(300)
    assert m.samples == 2  # reports at 11 and 12 fall inside
    whole = reader.energy_between(9.0, 13.0, wait=False)  # the first report covers one nominal period
    assert whole.energy_j == pytest.approx(100 + 200 + 300 + 400)


def test_window_before_first_report_or_after_last_is_refused() -> None:
    reader = _reader()
    reader.feed_line(kv(1, 100), 10.0)
    reader.feed_line(kv(2, 100), 11.0)
    with pytest.raises(MeterError, match="first report"):
        reader.energy_between(5.0, 10.5, wait=False)
    with pytest.raises(MeterError, match="no reading after the end"):
        reader.energy_between(10.0, 12.0, wait=False)


def test_channels_are_summed_and_a_missing_channel_is_reported() -> None:
    reader = _reader(channels=("P1", "P2"))
    reader.feed_line(kv(1, 100, 20), 1.0)
    reader.feed_line(kv(2, 100, 20), 2.0)
    assert reader.energy_between(1.0, 2.0, wait=False).energy_j == pytest.approx(120)
    other = _reader(channels=("P3",))
    other.feed_line(kv(1, 100), 1.0)
    assert other.reports == 0 and other.rejected == 1
    assert "no channel P3" in other.events()[0].message


def test_msg_gaps_are_reported_and_bridged() -> None:
    reader = _reader()
    reader.feed_line(kv(1, 100), 1.0)
    reader.feed_line(kv(2, 100), 2.0)
    reader.feed_line(kv(5, 160), 5.0)  # MSG 3 and 4 never arrived
    assert reader.missing_messages == 2
    m = reader.energy_between(1.0, 5.0, wait=False)
    assert m.energy_j == pytest.approx(100 + 3 * 160)  # the next report's power holds over the gap
    assert any("2 report(s) missing (MSG 2 -> 5)" in w for w in m.warnings)


def test_truncated_kv_line_is_rejected_once_the_full_field_set_is_known() -> None:
    reader = _reader()
    reader.feed_line(kv(1, 100), 1.0)
    reader.feed_line("MSG:2,Vrms:240.00,P1:1\r\n", 2.0)  # cut after two characters of P1
    reader.feed_line(kv(3, 100), 3.0)
    assert reader.reports == 2 and reader.rejected == 1
    messages = [e.message for e in reader.events()]
    assert any("truncated report" in m for m in messages)
    assert any("MSG 1 -> 3" in m for m in messages)


def test_line_noise_after_reports_is_reported() -> None:
    reader = _reader()
    reader.feed_line(kv(1, 90), 1.0)
    reader.feed_line(b"\x93\x01\xfe\r\n", 1.5)
    reader.feed_line(b"\xff\x13" + kv(2, 90).encode(), 2.0)
    messages = [e.message for e in reader.events()]
    assert messages == [
        "skipped a line of noise (3 undecodable characters)",
        "dropped 2 garbage character(s) in front of a report",
    ]
    assert reader.reports == 2


def test_banner_lines_are_counted_as_skipped() -> None:
    reader = _reader()
    for line in ["", "emonPi V2.1.2", "|Settings", kv(1, 90)]:
        reader.feed_line(line, 1.0)
    assert reader.reports == 1 and reader.skipped == 3 and reader.rejected == 0


def test_jeelib_silence_is_detected_from_timing() -> None:
    reader = _reader()
    for t in (1.0, 2.0, 3.0, 4.0, 7.0):
        reader.feed_line(JEELIB_LINE, t)
    assert any("no report for 3.00 s" in e.message for e in reader.events())


def test_end_window_warns_about_meter_problems() -> None:
    reader = _reader()
    reader.start = lambda: reader  # type: ignore[method-assign]  # fed by hand, no port
    reader.begin_window("w")
    t0 = reader._windows["w"]
    reader.feed_line(kv(1, 100), t0 + 0.01)
    reader.feed_line(kv(4, 100), t0 + 0.5)
    with pytest.warns(MeterWarning, match="report\\(s\\) missing"):
        m = reader.end_window("w")
    assert m.energy_j > 0


def test_meter_specs() -> None:
    meter = parse_meter_spec("emonpi:/dev/ttyAMA0")
    assert isinstance(meter, EmonPiReader)
    assert meter.port == "/dev/ttyAMA0" and meter.baud == 38400 and meter.channels == ("P1",)
    meter = parse_meter_spec("emonpi:/dev/ttyUSB0,115200,channels=P1+P2,node=7,period=0.5")
    assert isinstance(meter, EmonPiReader)
    assert (meter.baud, meter.channels, meter.node, meter.period_s) == (115200, ("P1", "P2"), 7, 0.5)
    gpu = parse_meter_spec("nvml:1")
    assert isinstance(gpu, NvmlMeter) and gpu.index == 1
    assert isinstance(parse_meter_spec("nvml"), NvmlMeter)
    assert isinstance(parse_meter_spec("rapl"), RaplMeter)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("emonpi", "needs a serial port"),
        ("emonpi:/dev/ttyAMA0,fast", "bad value"),
        ("emonpi:/dev/ttyAMA0,colour=red", "unknown option"),
        ("emonpi:/dev/ttyAMA0,channels=", "bad value"),
        ("nvml:first", "not an integer"),
        ("wattmeter:/dev/x", "unknown meter 'wattmeter'"),
    ],
)
def test_bad_meter_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_meter_spec(spec)
    assert "emonpi:PORT" in str(info.value)


def test_missing_port_is_a_clear_error() -> None:
    with pytest.raises(MeterError, match="cannot open emonPi serial port /nonexistent/tty"):
        EmonPiReader("/nonexistent/tty").start()


def test_a_channel_the_firmware_does_not_report_is_named_at_once(emonpi_emulator, emonpi_reader) -> None:
    """Issue 11: channels=P9 used to end in 'is the emonPi still starting' after the timeout."""
    from pytest_irene.rig.meters import MeterError

    reader = emonpi_reader(emonpi_emulator("kv"), channels=("P9",))
    with pytest.raises(MeterError, match=r"channels=P9: report has no channel P9 \(channels present: P1, P2, P3, P4\)"):
        reader.wait_for_samples(1, timeout_s=5.0)
    assert "still starting" not in str(reader.failure)


def test_a_channel_name_that_is_not_a_power_channel_is_a_usage_error() -> None:
    from pytest_irene.errors import UsageError
    from pytest_irene.rig.meters import parse_meter_spec

    with pytest.raises(UsageError, match=r"channels=X1.*not an emonPi power channel"):
        parse_meter_spec("emonpi:/dev/ttyAMA0,channels=X1")
