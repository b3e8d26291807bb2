"""`make drill`: the local disaster-recovery and alerting rehearsal (SPEC §7); see drill.run."""
