. /app/lib/greeting.sh
greeting
