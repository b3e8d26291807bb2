"""`make drill`: the local disaster-recovery and alerting rehearsal (docs/operations/drill.md); see drill.run."""
