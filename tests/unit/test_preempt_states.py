"""Preemption's phases: PREEMPTING (asked to checkpoint and stop) and PREEMPTED (queued again)."""
import pytest

from trainyard.errors import ConflictError
from trainyard.store import state as st


@pytest.mark.parametrize("old,new", [
    (st.RUNNING, st.PREEMPTING),  # the scheduler took its place
    (st.PREEMPTING, st.PREEMPTED),  # it checkpointed and stopped (or was killed after the grace)
    (st.PREEMPTING, st.SUCCEEDED), (st.PREEMPTING, st.FAILED),  # it ended on its own first
    (st.PREEMPTING, st.CANCELLING),  # the user cancels it meanwhile
    (st.RUNNING, st.PREEMPTED),  # a stop notice nobody here sent (a node going away)
    (st.PREEMPTED, st.DISPATCHING),  # its next attempt
    (st.PREEMPTED, st.CANCELLED), (st.PREEMPTED, st.FAILED),
])
def test_preemption_moves_are_legal(old, new):
    st.check_transition(old, new)


@pytest.mark.parametrize("old,new", [
    (st.PENDING, st.PREEMPTING), (st.SUBMITTED, st.PREEMPTING), (st.CANCELLING, st.PREEMPTING),
    (st.PREEMPTING, st.RUNNING), (st.PREEMPTING, st.PENDING), (st.PREEMPTED, st.RUNNING),
    (st.PREEMPTED, st.PREEMPTING), (st.SUCCEEDED, st.PREEMPTED), (st.CANCELLED, st.PREEMPTED),
])
def test_other_moves_into_or_out_of_preemption_are_refused(old, new):
    with pytest.raises(ConflictError) as info:
        st.check_transition(old, new, job_id="j-1")
    assert old in str(info.value) and new in str(info.value)


def test_a_preempting_job_still_runs_and_a_preempted_one_is_queued():
    assert st.public_state(st.PREEMPTING) == st.RUNNING
    assert st.public_state(st.PREEMPTED) == st.PENDING
    assert st.PREEMPTING in st.ACTIVE and st.PREEMPTED not in st.ACTIVE  # only one of them may have a Ray job
    assert st.QUEUED == {st.PENDING, st.PREEMPTED}
    assert not (st.QUEUED & st.TERMINAL) and not (st.QUEUED & st.ACTIVE)
    assert st.PREEMPTED in st.phases_for_public(st.PENDING)
    assert st.PREEMPTING in st.phases_for_public(st.RUNNING)
