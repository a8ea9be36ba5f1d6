"""The drift service: Evidently drift monitors over windows of completions, and retraining events.
(Issue 4: the window report and the completion features are built; the service is not yet.)"""
