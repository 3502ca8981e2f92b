"""The job state machine: legal and illegal moves, public mapping, Ray status mapping."""
import pytest

from trainyard.errors import ConflictError
from trainyard.store import state as st


@pytest.mark.parametrize("old,new", [
    (st.PENDING, st.DISPATCHING), (st.PENDING, st.CANCELLED), (st.DISPATCHING, st.SUBMITTED),
    (st.SUBMITTED, st.RUNNING), (st.RUNNING, st.SUCCEEDED), (st.RUNNING, st.FAILED),
    (st.RUNNING, st.CANCELLING), (st.CANCELLING, st.CANCELLED), (st.SUBMITTED, st.PENDING),
    (st.DISPATCHING, st.SUCCEEDED),
])
def test_legal_transitions(old, new):
    st.check_transition(old, new)
    assert st.can_transition(old, new)


@pytest.mark.parametrize("old,new", [
    (st.PENDING, st.RUNNING), (st.PENDING, st.SUCCEEDED), (st.RUNNING, st.PENDING),
    (st.SUCCEEDED, st.RUNNING), (st.CANCELLED, st.PENDING), (st.FAILED, st.SUCCEEDED),
    (st.CANCELLING, st.RUNNING), (st.RUNNING, st.DISPATCHING),
])
def test_illegal_transitions_raise(old, new):
    assert not st.can_transition(old, new)
    with pytest.raises(ConflictError) as info:
        st.check_transition(old, new, job_id="j-1")
    assert old in str(info.value) and new in str(info.value)


def test_terminal_states_have_no_exit():
    for phase in st.TERMINAL:
        for new in st.PHASES:
            assert not st.can_transition(phase, new)
    with pytest.raises(ConflictError, match="already ended"):
        st.check_transition(st.SUCCEEDED, st.CANCELLED)


def test_unknown_phase_is_a_bug_not_a_conflict():
    with pytest.raises(ValueError):
        st.check_transition("LIMBO", st.RUNNING)


def test_public_mapping_has_exactly_five_states():
    assert {st.public_state(p) for p in st.PHASES} == set(st.PUBLIC_STATES)
    assert st.public_state(st.DISPATCHING) == st.PENDING
    assert st.public_state(st.SUBMITTED) == st.PENDING
    assert st.public_state(st.CANCELLING) == st.RUNNING
    assert set(st.phases_for_public(st.PENDING)) == {st.PENDING, st.DISPATCHING, st.SUBMITTED, st.PREEMPTED}


def test_ray_status_mapping():
    assert st.ray_status_to_phase("PENDING") == st.SUBMITTED
    assert st.ray_status_to_phase("RUNNING") == st.RUNNING
    assert st.ray_status_to_phase("STOPPED") == st.CANCELLED
    assert st.ray_status_to_phase("SUCCEEDED") == st.SUCCEEDED
    assert st.ray_status_to_phase("FAILED") == st.FAILED
    with pytest.raises(ValueError):
        st.ray_status_to_phase("WEIRD")
