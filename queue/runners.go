package queue

import "time"

// Attempts run on runners: goroutines kept between attempts rather than
// started for each. An attempt calls deep (the Deliverer's SMTP session,
// its logging), and a new goroutine's small stack was grown and copied
// again for every message: runtime.newstack was 5% of sluice's CPU in the
// relay benchmark, under the per-attempt goroutine. A runner with nothing
// to do for runnerIdle, or once the queue closes, exits.
//
// A runner is started only when none is idle, and at most WithWorkers
// attempts run at once, so there are at most that many runners, plus
// those between the end of an attempt and their next wait.

// runnerIdle is how long a runner waits for another attempt before it
// exits.
const runnerIdle = 10 * time.Second

// run runs f on an idle runner, or on a new one.
func (q *Queue) run(f func()) {
	select {
	case q.work <- f:
	default:
		q.runners.Add(1)
		go q.runner(f)
	}
}

func (q *Queue) runner(f func()) {
	defer q.runners.Done()
	idle := time.NewTimer(runnerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(runnerIdle)
		select {
		case f = <-q.work:
		case <-idle.C:
			return
		case <-q.stop:
			return
		}
	}
}
