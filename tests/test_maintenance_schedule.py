"""The maintenance schedule engine: occurrences of startsAt/endsAt repeated by an RRULE in a time zone."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.maintenance.schedule import Occurrence, ScheduleError, Status, parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


def weekly_saturday_night():
    # Saturdays 02:00–04:00 Berlin; Berlin springs forward on Sunday 2026-03-29 and falls back on 2026-10-25.
    return parse_schedule(
        starts_at=berlin(2026, 3, 21, 2, 0),
        ends_at=berlin(2026, 3, 21, 4, 0),
        rrule="FREQ=WEEKLY;BYDAY=SA",
        timezone="Europe/Berlin",
    )


def test_it_keeps_a_weekly_window_at_local_time_across_the_march_change():
    schedule = weekly_saturday_night()
    before = schedule.state(utc(2026, 3, 22, 12))
    after = schedule.state(utc(2026, 3, 29, 12))
    assert before.next == Occurrence(utc(2026, 3, 28, 1), utc(2026, 3, 28, 3))  # 02:00 CET
    assert after.next == Occurrence(utc(2026, 4, 4, 0), utc(2026, 4, 4, 2))  # 02:00 CEST
    assert after.next.starts_at.astimezone(BERLIN).hour == 2


def test_it_keeps_a_weekly_window_at_local_time_across_the_october_change():
    schedule = weekly_saturday_night()
    assert schedule.state(utc(2026, 10, 20)).next == Occurrence(utc(2026, 10, 24, 0), utc(2026, 10, 24, 2))
    assert schedule.state(utc(2026, 10, 26)).next == Occurrence(utc(2026, 10, 31, 1), utc(2026, 10, 31, 3))


def test_it_reads_a_start_in_the_spring_forward_gap_with_the_offset_before_the_gap():
    # 02:30 does not exist in Berlin on 2026-03-29: it is 03:30 summer time (01:30 UTC).
    schedule = parse_schedule(
        starts_at=berlin(2026, 3, 22, 2, 30),
        ends_at=berlin(2026, 3, 22, 3, 30),
        rrule="FREQ=WEEKLY",
        timezone="Europe/Berlin",
    )
    assert schedule.state(utc(2026, 3, 23)).next == Occurrence(utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30))


def test_it_takes_the_first_of_two_starts_in_the_fall_back_hour():
    # 02:30 happens twice in Berlin on 2026-10-25: the first, in summer time, is 00:30 UTC.
    schedule = parse_schedule(
        starts_at=berlin(2026, 10, 18, 2, 30),
        ends_at=berlin(2026, 10, 18, 3, 0),
        rrule="FREQ=WEEKLY",
        timezone="Europe/Berlin",
    )
    assert schedule.state(utc(2026, 10, 19)).next == Occurrence(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1))
    assert schedule.covers(utc(2026, 10, 25, 0, 45))
    assert not schedule.covers(utc(2026, 10, 25, 1, 45))  # the second 02:45 is outside


def test_it_reports_scheduled_active_and_completed_for_a_one_off_window():
    schedule = parse_schedule(starts_at=utc(2026, 5, 1, 10), ends_at=utc(2026, 5, 1, 12))
    window = Occurrence(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))
    assert (schedule.state(utc(2026, 5, 1, 9)).status, schedule.state(utc(2026, 5, 1, 9)).next) == (
        Status.SCHEDULED,
        window,
    )
    assert (schedule.state(utc(2026, 5, 1, 10)).status, schedule.state(utc(2026, 5, 1, 10)).next) == (
        Status.ACTIVE,
        window,
    )
    assert (schedule.state(utc(2026, 5, 1, 12)).status, schedule.state(utc(2026, 5, 1, 12)).next) == (
        Status.COMPLETED,
        None,
    )


def test_it_shows_the_current_occurrence_while_one_is_active():
    schedule = parse_schedule(
        starts_at=utc(2026, 5, 1, 10), ends_at=utc(2026, 5, 1, 12), rrule="FREQ=DAILY", timezone="UTC"
    )
    state = schedule.state(utc(2026, 5, 3, 11))
    assert state.status is Status.ACTIVE
    assert state.next == Occurrence(utc(2026, 5, 3, 10), utc(2026, 5, 3, 12))


def test_it_completes_after_count_occurrences_counting_starts_at():
    schedule = parse_schedule(
        starts_at=utc(2026, 5, 1, 10), ends_at=utc(2026, 5, 1, 11), rrule="FREQ=DAILY;COUNT=3", timezone="UTC"
    )
    starts = [o.starts_at for o in schedule.overlapping(utc(2026, 4, 1), utc(2026, 6, 1))]
    assert starts == [utc(2026, 5, 1, 10), utc(2026, 5, 2, 10), utc(2026, 5, 3, 10)]
    assert schedule.state(utc(2026, 5, 3, 11)).status is Status.COMPLETED


def test_it_counts_a_starts_at_the_rule_does_not_match_as_the_first_occurrence():
    # 2026-05-01 is a Friday; RFC 5545 makes DTSTART an occurrence, and part of COUNT, anyway.
    schedule = parse_schedule(
        starts_at=utc(2026, 5, 1, 10),
        ends_at=utc(2026, 5, 1, 11),
        rrule="FREQ=WEEKLY;BYDAY=SU;COUNT=3",
        timezone="UTC",
    )
    starts = [o.starts_at for o in schedule.overlapping(utc(2026, 4, 1), utc(2026, 7, 1))]
    assert starts == [utc(2026, 5, 1, 10), utc(2026, 5, 3, 10), utc(2026, 5, 10, 10)]
    one = parse_schedule(
        starts_at=utc(2026, 5, 1, 10), ends_at=utc(2026, 5, 1, 11), rrule="FREQ=WEEKLY;BYDAY=SU;COUNT=1"
    )
    assert one.state(utc(2026, 5, 1, 12)).status is Status.COMPLETED


def test_it_stops_at_until_inclusive():
    schedule = parse_schedule(
        starts_at=utc(2026, 5, 1, 10),
        ends_at=utc(2026, 5, 1, 11),
        rrule="RRULE:FREQ=DAILY;UNTIL=20260503T100000Z",
    )
    assert schedule.state(utc(2026, 5, 2, 12)).next == Occurrence(utc(2026, 5, 3, 10), utc(2026, 5, 3, 11))
    assert schedule.state(utc(2026, 5, 3, 12)).status is Status.COMPLETED


@pytest.mark.parametrize(
    ("rrule", "message"),
    [
        ("garbage", "not NAME=VALUE"),
        ("FREQ=SOMETIMES", "not a valid RFC 5545 RRULE"),
        ("FREQ=WEEKLY;BYDAY=XX", "not a valid RFC 5545 RRULE"),
        ("FREQ=DAILY;COLOUR=RED", "not a valid RFC 5545 RRULE"),
        ("FREQ=DAILY;BYHOUR=25", "not a valid RFC 5545 RRULE"),
        ("FREQ=DAILY;COUNT=0", "COUNT must be a positive integer"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL must be a positive integer"),
        ("FREQ=DAILY;FREQ=WEEKLY", "appears twice"),
        ("FREQ=DAILY;UNTIL=20270101", "UNTIL must be a UTC time"),
        ("FREQ=MINUTELY", "HOURLY or slower"),
        ("DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY", "one RRULE value"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "no occurrence"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30;COUNT=5", "no occurrence"),
    ],
)
def test_it_refuses_a_bad_rrule_naming_the_field(rrule, message):
    with pytest.raises(ScheduleError, match=message) as raised:
        parse_schedule(starts_at=utc(2026, 5, 1, 10), ends_at=utc(2026, 5, 1, 11), rrule=rrule)
    assert raised.value.field == "rrule"


@pytest.mark.parametrize(
    ("ends_at", "timezone", "field"),
    [
        (utc(2026, 5, 1, 10), "UTC", "endsAt"),
        (utc(2026, 6, 1, 10, 0, 1), "UTC", "endsAt"),
        (utc(2026, 5, 1, 11), "Mars/Olympus_Mons", "timezone"),
        (utc(2026, 5, 1, 11), "../etc/passwd", "timezone"),
    ],
)
def test_it_refuses_bad_times_and_zones(ends_at, timezone, field):
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(starts_at=utc(2026, 5, 1, 10), ends_at=ends_at, rrule="FREQ=DAILY", timezone=timezone)
    assert raised.value.field == field


def test_it_accepts_exactly_31_days():
    schedule = parse_schedule(starts_at=utc(2026, 5, 1), ends_at=utc(2026, 6, 1))
    assert schedule.covers(utc(2026, 5, 31, 23, 59))


def test_it_tells_whether_an_instant_is_inside_a_window_spanning_midnight():
    schedule = parse_schedule(
        starts_at=berlin(2026, 5, 1, 23), ends_at=berlin(2026, 5, 2, 1), rrule="FREQ=DAILY", timezone="Europe/Berlin"
    )
    assert schedule.covers(berlin(2026, 5, 10, 0, 30))
    assert schedule.covers(berlin(2026, 5, 10, 23, 0))
    assert not schedule.covers(berlin(2026, 5, 10, 1, 0))  # the end is exclusive
    assert not schedule.covers(berlin(2026, 5, 10, 12, 0))
    assert not schedule.covers(berlin(2026, 5, 1, 22, 59))  # nothing before startsAt


def test_it_lists_the_occurrences_overlapping_a_range():
    schedule = parse_schedule(
        starts_at=utc(2026, 5, 1, 23), ends_at=utc(2026, 5, 2, 1), rrule="FREQ=DAILY", timezone="UTC"
    )
    found = schedule.overlapping(utc(2026, 5, 3, 0, 30), utc(2026, 5, 5, 23))
    assert found == [
        Occurrence(utc(2026, 5, 2, 23), utc(2026, 5, 3, 1)),  # started before the range
        Occurrence(utc(2026, 5, 3, 23), utc(2026, 5, 4, 1)),
        Occurrence(utc(2026, 5, 4, 23), utc(2026, 5, 5, 1)),
    ]
    assert schedule.overlapping(utc(2026, 5, 3, 1), utc(2026, 5, 3, 23)) == []  # touching is not overlapping


def test_it_answers_far_from_starts_at_without_scanning_forever():
    schedule = parse_schedule(
        starts_at=utc(2026, 5, 1, 10), ends_at=utc(2026, 5, 1, 10, 30), rrule="FREQ=HOURLY", timezone="UTC"
    )
    now = utc(2031, 5, 1, 10, 15)
    assert schedule.state(now).next == Occurrence(utc(2031, 5, 1, 10), utc(2031, 5, 1, 10, 30))
    assert len(schedule.overlapping(now, now + timedelta(days=1))) == 25  # 10:00 today to 10:00 tomorrow


def test_it_puts_no_occurrence_before_a_starts_at_in_the_second_of_two_hours():
    # 01:30 UTC on 2026-10-25 is the second 02:30 in Berlin; the rule's own 02:30 that day is the first.
    schedule = parse_schedule(
        starts_at=utc(2026, 10, 25, 1, 30), ends_at=utc(2026, 10, 25, 2), rrule="FREQ=DAILY", timezone="Europe/Berlin"
    )
    assert not schedule.covers(utc(2026, 10, 25, 0, 45))
    assert schedule.state(utc(2026, 10, 25, 0)).next == Occurrence(utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2))
    assert schedule.state(utc(2026, 10, 25, 3)).next == Occurrence(utc(2026, 10, 26, 1, 30), utc(2026, 10, 26, 2))
