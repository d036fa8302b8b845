"""`blip2-chat describe`: alt text for files and folders."""
