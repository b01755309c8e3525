-- migrations/postgres/0002_members_by_activity.sql, in SQLite's words: each
-- membership carries its conversation's activity, so a page of a member's
-- conversations is read from one index in order.
ALTER TABLE conversation_members ADD COLUMN last_activity_at INTEGER NOT NULL DEFAULT 0;
UPDATE conversation_members
   SET last_activity_at = (SELECT c.last_activity_at FROM conversations c
                            WHERE c.id = conversation_members.conversation_id);

CREATE INDEX conversation_members_by_activity
    ON conversation_members (user_id, last_activity_at DESC, conversation_id DESC);
DROP INDEX conversation_members_by_user;

-- The copy follows the conversation.
CREATE TRIGGER conversation_activity_to_members
    AFTER UPDATE OF last_activity_at ON conversations
    FOR EACH ROW
    WHEN OLD.last_activity_at IS NOT NEW.last_activity_at
BEGIN
    UPDATE conversation_members
       SET last_activity_at = NEW.last_activity_at
     WHERE conversation_id = NEW.id;
END;

-- A release before this one inserts members without the column (0): they
-- get their conversation's activity.
CREATE TRIGGER conversation_members_without_activity
    AFTER INSERT ON conversation_members
    FOR EACH ROW
    WHEN NEW.last_activity_at = 0
BEGIN
    UPDATE conversation_members
       SET last_activity_at = COALESCE(
               (SELECT c.last_activity_at FROM conversations c WHERE c.id = NEW.conversation_id),
               NEW.joined_at)
     WHERE conversation_id = NEW.conversation_id AND user_id = NEW.user_id;
END;
