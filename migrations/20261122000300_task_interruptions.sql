-- How many times a task's processing was cut off without finishing (the
-- worker was killed, crashed or lost its services mid-task). A task that
-- keeps taking workers down is failed with a reason after as many
-- interruptions as the queue's delivery limit, instead of being
-- dead-lettered by the broker with nothing on the task row.
ALTER TABLE tasks ADD COLUMN interruptions integer NOT NULL DEFAULT 0
    CHECK (interruptions >= 0);
